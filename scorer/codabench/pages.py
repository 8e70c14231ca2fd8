"""The text of a Codabench competition: its pages (Markdown), the starting kit's README and the
bundle's README for the organiser. Plain functions of what the bundle writer knows."""

from __future__ import annotations

from dataclasses import dataclass

from scorer.codabench.layout import COLUMNS, FACT_SHEET
from scorer.paths import STUDY_TYPES

MURA_PAGE = "https://stanfordmlgroup.github.io/competitions/mura/"


@dataclass(frozen=True)
class Split:
    """One phase's data as the pages describe it."""

    phase: str  # the phase's name
    what: str  # "the hidden test set", "the validation set"
    studies: dict[str, int]  # study type -> studies
    images: dict[str, int]  # study type -> images
    root: str  # the folder input.csv's images are under, in the container
    worker_folder: str | None  # with --data-on-worker: the folder each worker's /app/data must hold
    start: str
    end: str | None


@dataclass(frozen=True)
class Text:
    title: str
    image: str
    time_limit: int  # the phase's execution_time_limit, seconds
    predict_limit: float  # what predict.py gets of it
    max_submissions: int
    max_per_day: int
    splits: tuple[Split, ...]
    gold: str  # who the gold standard is, in words
    radiologists: tuple[tuple[str, float | None, float | None, float | None], ...]  # name, kappa, lo, hi
    best_radiologist: str | None
    resamples: int
    seed: int
    confidence: float
    model_extra: tuple[str, ...]  # the kit's `model` extra: what the image has for participants
    queue: str | None


def _f(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _period(split: Split) -> str:
    return f"from {split.start} UTC" + (f" to {split.end} UTC" if split.end else " (no end date)")


def overview(t: Text) -> str:
    phases = "\n".join(
        f"- **{s.phase}**: {_period(s)}, scored on {s.what} ({sum(s.studies.values()):,} studies)."
        for s in t.splits
    )
    return f"""# {t.title}

Is a musculoskeletal radiograph normal or abnormal? Each study holds one or more X-ray views of
an elbow, finger, forearm, hand, humerus, shoulder or wrist; your model answers 0 (normal) or 1
(abnormal) per study. The task, the data and the evaluation follow MURA (Rajpurkar, Irvin et
al., 2017; {MURA_PAGE}).

This is a code competition: you submit `predict.py` with your model, and it runs on the
organisers' compute workers, offline, on images you never see. The score is Cohen's kappa
against the majority of three radiologists, per study type and overall.

## Phases

{phases}

Each submission may run {t.time_limit} s; each participant has {t.max_submissions} submissions
per phase, {t.max_per_day} a day. See **Data**, **Evaluation** and **Submitting**.
"""


def data(t: Text) -> str:
    sections = []
    for split in t.splits:
        rows = "\n".join(
            f"| {kind.capitalize()} | {split.studies.get(kind, 0):,} | {split.images.get(kind, 0):,} |"
            for kind in STUDY_TYPES
        )
        total = f"| **All** | {sum(split.studies.values()):,} | {sum(split.images.values()):,} |"
        sections.append(
            f"## {split.phase}: {split.what}\n\n| study type | studies | images |\n|---|---|---|\n"
            f"{rows}\n{total}\n"
        )
    example = t.splits[-1].root
    return f"""# Data

## Training data

Train on MURA v1.1 (download it from {MURA_PAGE} after accepting its research use agreement):
bone X-rays in `MURA-v1.1/{{train,valid}}/XR_{{TYPE}}/patientNNNNN/studyK_{{positive|negative}}/`,
with `{{split}}_image_paths.csv` and `{{split}}_labeled_studies.csv`. The starting kit's reference
model trains on that folder as it is.

## What your code is given

{"".join(sections)}
`input.csv` lists every image by its absolute path, one per line:

```
{example}/test/XR_WRIST/case0001/image1.png
{example}/test/XR_WRIST/case0001/image2.png
```

A study is a `caseNNNN` folder. The cases are numbered in an order drawn from a secret seed and
every file has the same time and mode: nothing in a path or a file says a label, a patient or
where a study came from. The images are MURA's (PNG, longest side 512 px, mostly greyscale).
"""


def evaluation(t: Text) -> str:
    per_type = ", ".join(c.title for c in COLUMNS if not c.hidden)
    if t.radiologists:
        rows = "\n".join(
            f"| {name} | {_f(kappa)} | {_f(low)} – {_f(high)} |" for name, kappa, low, high in t.radiologists
        )
        baseline = (
            "The other radiologists, scored against the same gold standard in the same way (the "
            f"human baseline; the best is {t.best_radiologist}):\n\n| radiologist | kappa | "
            f"{t.confidence:.0%} interval |\n|---|---|---|\n{rows}\n"
        )
    else:
        baseline = "This phase's gold file has no further radiologists to compare with.\n"
    return f"""# Evaluation

**Cohen's kappa** between your 0/1 answers and the gold standard: {t.gold}. Kappa is computed for
each of the seven study types and over all studies (`Overall`); the leaderboard ranks by the
overall kappa, highest first (equal kappas: the earlier submission first).

**Intervals.** Each kappa comes with a {t.confidence:.0%} percentile bootstrap interval:
{t.resamples:,} resamples of the studies with replacement (seed {t.seed}), as in the MURA paper;
the radiologists are resampled with the same draws, so differences are paired.

{baseline}
**Every study counts.** Your answer must have exactly one 0 or 1 for every case of `input.csv`;
an answer with a case missing, repeated or extra, or with probabilities instead of 0/1, is not
scored (the message says which cases and what to change).

**Leaderboard columns**: {per_type}, to three decimals. The interval bounds are kept as hidden
columns; your submission's detailed results show every kappa with its interval, the
radiologists' kappas and the paired differences.
"""


def submitting(t: Text) -> str:
    extra = ", ".join(t.model_extra)
    return f"""# Submitting

**The contract.** A submission is a zip with `predict.py` at its root, and whatever it needs
beside it (code, weights). It is run as

```
python3 predict.py input.csv output.csv
```

from the submission's root (`/app/ingested_program`, the working directory). `input.csv` lists
the images (see **Data**). Write `output.csv`: one line per study, no header, the study's folder
as `input.csv` gives it with a trailing slash, a comma, then 0 (normal) or 1 (abnormal):

```
{t.splits[-1].root}/test/XR_WRIST/case0001/,1
```

Optionally, when the environment variable `MURA_PROBABILITIES` is set, also write each study's
probability of abnormality to the file it names (`study/,0.8312`); the starting kit's
`predict.py` does.

**The container.** The image `{t.image}`: Python 3 with the MURA kit and its model extra
({extra}) on a CUDA PyTorch base. It runs offline: no network, nothing is downloaded; bring your
weights in the zip. Whether a GPU is there depends on the organisers' workers
(`torch.cuda.is_available()`).

**Time.** `predict.py` has {t.predict_limit:g} s (the phase's {t.time_limit} s, less the time to
start and check); past that, every process it started is stopped and the submission fails.

**When it fails**, the last line of the log says why: a crash (with the last lines of your
output), the time limit, no `output.csv`, or what is wrong with the answer. Nothing is scored.

**Zip it** from inside the folder, so that `predict.py` is at the zip's root (a `metadata` or
`metadata.yaml` file there is refused: Codabench would run it beside the kit's program):

```
cd submission && zip -r ../submission.zip .
```

Each submission is also asked for your model's name, institution and a link (shown on the
leaderboard). The starting kit has the reference model's `predict.py` and how to train it.
"""


def terms(t: Text) -> str:
    return f"""# Terms

- The test images are the organisers'; a submission may read them only to predict them. Do not
  copy them, or anything derived from them, out of the container (its log included).
- Your submission runs on the organisers' machines: it must not try to reach the network, other
  containers or the machine itself.
- One account per team. The organisers may rerun, disqualify or remove submissions that break
  these terms, and publish the leaderboard ({", ".join(FACT_SHEET)} and scores).
- Train only on data you may use (MURA's own terms: {MURA_PAGE}).
"""


def starting_kit(t: Text) -> str:
    return f"""# Starting kit: {t.title}

`submission/predict.py` is the MURA kit's reference submission: it runs an ensemble bundle
(`submission/bundle/`, which you make) the way the competition runs your code:
`python3 predict.py input.csv output.csv` from the submission's root. There are no weights here.

1. Install the kit with its model extra (Python 3.10+): from a checkout of the kit,
   `pip install -e '.[model]'`.
2. Download MURA v1.1 ({MURA_PAGE}); `DATA` below is the folder that holds `MURA-v1.1/`
   (`mura synth DATA` makes a small generated one to try the steps).
3. Train, then bundle the runs beside predict.py:

   ```
   mura train DATA --out runs/a --arch densenet169 --image-size 224 --epochs 10
   mura bundle runs/a --out submission/bundle
   ```

4. Try it as the competition runs it (the validation set's index works as input.csv):

   ```
   cd DATA && python3 /path/to/submission/predict.py MURA-v1.1/valid_image_paths.csv /tmp/output.csv
   mura score MURA-v1.1/valid_labeled_studies.csv /tmp/output.csv
   ```

5. Zip the submission from inside its folder and upload `submission.zip`:

   ```
   cd submission && zip -r ../submission.zip predict.py bundle
   ```

The container is `{t.image}` (the kit and {", ".join(t.model_extra)}); your own code may use
anything it has. {t.predict_limit:g} s per submission; no network.
"""


def readme(t: Text, zip_name: str, private: str, worker_data: str | None) -> str:
    queue = (
        f"It runs on the queue `{t.queue}`."
        if t.queue
        else "Set your own queue in the competition's editor (or rebuild with `--queue VHOST`)."
    )
    folders = ""
    if worker_data is not None:
        listed = "\n".join(f"- `{s.worker_folder}` ({s.phase} phase)" for s in t.splits)
        folders = f"""
## The images stay on your workers (--data-on-worker)

This zip holds no images. Every compute worker of the competition's queue must hold, in its
`HOST_DIRECTORY/data/` (mounted read-only at `/app/data` in every container it runs):

{listed}

Copy them from `{worker_data}/`. The ingestion program checks each image's sha256 before it
runs a submission and fails with an organiser error on a missing or stale copy. Put nothing else
there: submissions can read all of `/app/data`.
"""
    return f"""# {t.title}: the Codabench bundle

Written by `mura codabench bundle`. Upload `{zip_name}` as it is (Codabench: Benchmarks ->
Management -> Upload); `competition.yaml` at its root names every other file here.

- Image: `{t.image}` (`make codabench-image`, pushed where the workers can pull it).
- Phases: {"; ".join(f"{s.phase} {_period(s)}" for s in t.splits)}. {queue}
- The map back to the real studies, the gold files and strata with the anonymised names are in
  `{private}/`: keep them; they never go into the zip.
{folders}
## Workers

Codabench applies no memory, CPU, process or network limits of its own. Run the competition's
compute workers with `COMPETITION_CONTAINER_NETWORK_DISABLED=True` (submissions run offline), and
for GPUs `USE_GPU=true` (and `GPU_DEVICE`). The kit's README, "Hosting on Codabench", has the
rest.
"""
