"""The leaderboard: a SQLite store of every scored (and failed) submission, ranked and rendered
the way the MURA competition page did (SPEC §5).

- store    the database: open_store, Store, Entry (the API the evaluation harness records with)
- schema   the tables, the schema version and the migrations from older versions
- records  an Entry (who submitted what) with a `mura score --json` result or a failure, checked
           and turned into a row
- rank     the board: which entries show, their order and rank, the radiologist row
- render   Markdown, HTML, CSV and JSON; plot draws the HTML page's forest plot (inline SVG)
- codalab  importing a CodaLab Worksheets competition dump
- codabench importing a Codabench competition's results
- cli      `mura leaderboard add | render | import-codalab | import-codabench`

Organisers' side: no torch, PIL, reference_model, numpy or matplotlib here.
"""
