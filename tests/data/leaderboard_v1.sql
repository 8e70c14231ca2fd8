-- A leaderboard store at schema version 1, as the kit first laid it out: the per-type kappas,
-- the radiologist baselines and the whole result kept as JSON text in the submissions row.
PRAGMA application_id = 1297437249;
PRAGMA user_version = 1;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('format', 'mura-kit leaderboard');
CREATE TABLE submissions (
    id INTEGER PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,
    submitter TEXT NOT NULL,
    model TEXT,
    institution TEXT,
    link TEXT,
    submitted TEXT NOT NULL,
    scored TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    kappa REAL,
    kappa_lower REAL,
    kappa_upper REAL,
    per_type TEXT,
    baselines TEXT,
    gold_raters TEXT,
    content_sha256 TEXT,
    result TEXT
);
INSERT INTO submissions VALUES (
    1, 'v1-identity-1', 'turbobits', 'base-comb2-xuan-v3(ensemble)', 'jzhang Availink', NULL,
    '2018-11-30T19:48:12Z', '2018-11-30T19:58:12Z', 'scored', NULL,
    0.8434782608695652, 0.7911, 0.8902,
    '{"Elbow": [0.845303867403315, 0.71, 0.94], "Finger": [0.6000000000000001, 0.41, 0.77], "Forearm": [0.8672566371681416, 0.7, 1.0], "Hand": [0.8507462686567164, 0.69, 0.97], "Humerus": [0.8666666666666667, 0.72, 1.0], "Shoulder": [0.9327354260089686, 0.84, 1.0], "Wrist": [0.9307875894988068, 0.85, 1.0]}',
    '{"Rad1": {"Overall": [0.731, 0.66, 0.8], "Wrist": [0.79, 0.6, 0.93]}, "Rad2": {"Overall": [0.778, 0.71, 0.84]}}',
    '["Rad4", "Rad5", "Rad6"]',
    'de9f1c240512c56e91cce1c90ba83b35ed94d9f2e9d90fc943a0d177f93e9e98',
    '{"Overall_Mean": 0.8434782608695652, "format": "mura-kit score v1", "inputs": {"gold": {"file": "test.csv", "sha256": "3c8f0784b0ed2ccc4322f38e0da182e5cb1111821088e91d1f1ea20e7d8a1bb1"}}}'
);
INSERT INTO submissions VALUES (
    2, 'v1-identity-2', 'maxentropy', NULL, NULL, 'https://example.org/m',
    '2018-11-06T21:08:29Z', '2018-11-06T21:20:00Z', 'scored', NULL,
    0.8335146898803046, 0.80, 0.86, '{"Elbow": [null, null, null]}', NULL, '["Rad1", "Rad2", "Rad3"]', NULL, NULL
);
INSERT INTO submissions VALUES (
    3, 'v1-identity-3', 'bob', NULL, NULL, NULL,
    '2018-12-01T00:00:00Z', '2018-12-01T00:10:00Z', 'failed', 'predict.py exited with code 1',
    NULL, NULL, NULL, NULL, NULL, NULL, 'abababababababababababababababababababababababababababababababab', NULL
);
