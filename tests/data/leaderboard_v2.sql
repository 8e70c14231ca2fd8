-- A leaderboard store at schema version 2: one column per score, the radiologists and the whole
-- result in tables of their own; every submitter named; nothing says where an interval came from.
-- Rows: two `mura score` results (one migrated from version 1 without its result), a failure,
-- and two entries imported from a CodaLab dump (no gold raters, no result), one without a score.
PRAGMA application_id = 1297437249;
PRAGMA user_version = 2;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('format', 'mura-kit leaderboard');
CREATE TABLE submissions (
    id INTEGER PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,
    submitter TEXT NOT NULL CHECK (submitter <> ''),
    model TEXT,
    institution TEXT,
    link TEXT,
    submitted TEXT NOT NULL,
    scored TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('scored', 'failed')),
    reason TEXT,
    kappa REAL, kappa_lower REAL, kappa_upper REAL,
    elbow_kappa REAL, elbow_lower REAL, elbow_upper REAL,
    finger_kappa REAL, finger_lower REAL, finger_upper REAL,
    forearm_kappa REAL, forearm_lower REAL, forearm_upper REAL,
    hand_kappa REAL, hand_lower REAL, hand_upper REAL,
    humerus_kappa REAL, humerus_lower REAL, humerus_upper REAL,
    shoulder_kappa REAL, shoulder_lower REAL, shoulder_upper REAL,
    wrist_kappa REAL, wrist_lower REAL, wrist_upper REAL,
    gold_raters TEXT,
    gold_sha256 TEXT,
    content_sha256 TEXT,
    CHECK ((status = 'failed') = (reason IS NOT NULL))
);
CREATE INDEX submissions_board ON submissions (status, kappa DESC, submitted, id);
CREATE TABLE radiologists (
    submission_id INTEGER NOT NULL REFERENCES submissions (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    grp TEXT NOT NULL,
    kappa REAL,
    kappa_lower REAL,
    kappa_upper REAL,
    PRIMARY KEY (submission_id, name, grp)
) WITHOUT ROWID;
CREATE INDEX radiologists_best ON radiologists (grp, kappa DESC, submission_id, name);
CREATE TABLE results (
    submission_id INTEGER PRIMARY KEY REFERENCES submissions (id) ON DELETE CASCADE,
    json TEXT NOT NULL
);
INSERT INTO submissions (id, identity, submitter, model, institution, link, submitted, scored, status,
    reason, kappa, kappa_lower, kappa_upper, wrist_kappa, wrist_lower, wrist_upper, gold_raters,
    gold_sha256, content_sha256)
VALUES
    (1, 'v2-identity-1', 'turbobits', 'base-comb2-xuan-v3(ensemble)', 'jzhang Availink', NULL,
     '2018-11-30T19:48:12Z', '2018-11-30T19:58:12Z', 'scored', NULL, 0.8434782608695652, 0.7911, 0.8902,
     0.9307875894988068, 0.85, 1.0, '["Rad4", "Rad5", "Rad6"]',
     '3c8f0784b0ed2ccc4322f38e0da182e5cb1111821088e91d1f1ea20e7d8a1bb1',
     'de9f1c240512c56e91cce1c90ba83b35ed94d9f2e9d90fc943a0d177f93e9e98'),
    (2, 'v2-identity-2', 'maxentropy', NULL, NULL, 'https://example.org/m',
     '2018-11-06T21:08:29Z', '2018-11-06T21:20:00Z', 'scored', NULL, 0.8335146898803046, 0.80, 0.86,
     NULL, NULL, NULL, '["Rad1", "Rad2", "Rad3"]', NULL, NULL),
    (3, 'v2-identity-3', 'bob', NULL, NULL, NULL,
     '2018-12-01T00:00:00Z', '2018-12-01T00:10:00Z', 'failed', 'predict.py exited with code 1',
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     'abababababababababababababababababababababababababababababababab'),
    (4, 'v2-identity-4', 'gonglinyuan', 'gcm (ensemble)', 'Peking University', NULL,
     '2018-06-18T02:07:24Z', '2018-06-18T02:07:24Z', 'scored', NULL, 0.773274917853231,
     0.7609548573275, 0.7855949783789619, 0.7564, 0.7291, 0.7837, NULL, NULL, NULL),
    (5, 'v2-identity-5', 'pwnme', 'Pdn (single model)', 'Personal', NULL,
     '2018-08-22T04:56:27Z', '2018-08-22T04:56:27Z', 'scored', NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO radiologists VALUES
    (1, 'Rad1', 'Overall', 0.731, 0.66, 0.8),
    (1, 'Rad1', 'Wrist', 0.79, 0.6, 0.93),
    (1, 'Rad2', 'Overall', 0.778, 0.71, 0.84);
INSERT INTO results VALUES (1, '{"Overall_Mean": 0.8434782608695652, "format": "mura-kit score v1", "inputs": {"gold": {"file": "test.csv", "sha256": "3c8f0784b0ed2ccc4322f38e0da182e5cb1111821088e91d1f1ea20e7d8a1bb1"}}}');
