"""Fit the score calibration of a checkpoint on your own labelled recordings.

Examples:
    python -m learner.calibrate --data my-speakers/ -c runs/x
    python -m learner.calibrate --data my-speakers/ -c runs/x --n-trials 6000 --prior 0.05
    python -m learner.calibrate --data DIR -c runs/x --trials my-trials.txt --dry-run

--data is a corpus with one folder per speaker (as training reads; several recordings
per speaker, the more separate sessions the better). Trials are generated (target
pairs across files, seeded) or read from a VoxCeleb / Kaldi list. Each trial's test
side is taken in turn at full length, cut to 2 s and cut to 1 s, so the duration
measure is fitted; the calibration (cosine -> LLR, the shorter input's log duration as
quality measure, scikit-learn's logistic regression with prior weighting) is written
into the checkpoint's calibration.json, replacing the one fitted on held-out speakers;
with a cohort the AS-norm calibration too. The cohort (--cohort): the checkpoint's own,
else made from its run's training speakers when that corpus is still where the run read
it (auto, the default), from a folder of your own (one sub-folder per speaker), or none.
Printed: Cllr, minCllr and actual DCF of the old calibration (if any) and the new one on
these trials.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from learner.commands.cli import (
    EXIT_ERROR,
    add_progress,
    guarded,
    load_model,
    parser,
    probability,
)
from learner.inference.recordings import cut_recordings, folder_cohort
from learner.inference.speaker_model import SpeakerModel
from learner.scoring.calibration import act_dcf, cllr, min_cllr
from learner.scoring.pipeline import fit_calibrations
from learner.scoring.trials import N_TRIALS, Names, generate_trials, read_trials
from workers.corpus import SpeakerDatabase


def make_cohort(model: SpeakerModel, how: str) -> tuple[np.ndarray | None, str]:
    """The AS-norm cohort and where it came from (``stored``, ``run``, a folder, ``none``)."""
    if how == "none":
        return None, "none"
    if how == "auto" and model.scoring_cohort is not None:
        return model.scoring_cohort, "stored"
    if how == "auto":
        from learner.heldout import Cohort
        from workers.corpus import CorpusError
        from workers.rundata import RunData

        try:
            data = RunData.open(model.cfg.data, model.cfg.synthetic)
        except CorpusError as exc:
            print(
                f"warning: no AS-norm cohort: the run's corpus is not readable ({exc})",
                file=sys.stderr,
            )
            return None, "none"
        train = data.db.subset(data.train)
        source = data.source(model.cfg.features, train, memory_bytes=0)
        speakers = model.cfg.learner.cohort_speakers or None
        cohort = Cohort(train, source, model.cfg.sampler.frames, *([speakers] if speakers else []))
        vectors = cohort(model.embed_batch)
        return (vectors, "run") if len(vectors) else (None, "none")
    return folder_cohort(model, how), str(how)


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m learner.calibrate", __doc__)
    p.add_argument("--data", required=True, help="corpus: one folder per speaker")
    p.add_argument("--trials", help="trial list (VoxCeleb or Kaldi) instead of generated ones")
    p.add_argument("--n-trials", type=int, default=N_TRIALS, help="trials to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--prior",
        type=probability,
        default=0.5,
        help="the target prior the fit weights to (BOSARIS), between 0 and 1",
    )
    p.add_argument(
        "--cohort",
        default="auto",
        metavar="auto|none|DIR",
        help="AS-norm cohort: the stored one or the run's training speakers (auto), none, or "
        "a folder with one sub-folder per speaker",
    )
    p.add_argument("--dry-run", action="store_true", help="report, write nothing")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_progress(p)
    a = p.parse_args(argv)

    def body() -> int:
        model = load_model(a)
        if model.checkpoint is None:
            print(
                "error: calibrate the checkpoint, then export it again (an ONNX export "
                "carries its checkpoint's calibration)",
                file=sys.stderr,
            )
            return EXIT_ERROR
        db = SpeakerDatabase.scan(a.data)
        if a.trials:
            listed = read_trials(a.trials, Names([[u.path, u.utt_id] for u in db.utterances]))
            trials = listed.trials
        else:
            trials = generate_trials(db, a.n_trials, a.seed)
        paths = [db.abspath(i) for i in range(len(db.utterances))]
        used = sorted({i for t in trials for i in t[1:]})
        cuts, ok = cut_recordings(model, [paths[i] for i in used], a.progress)
        row = np.full(len(paths), -1)
        row[np.asarray(used)[ok]] = np.arange(int(ok.sum()))
        kept = [t for t in trials if row[t[1]] >= 0 and row[t[2]] >= 0]
        groups = [db.utterances[t[1]].speaker for t in kept]
        trials = [(t[0], row[t[1]], row[t[2]]) for t in kept]
        if not any(t[0] for t in trials) or all(t[0] for t in trials):
            raise ValueError(
                f"{a.data}: the usable trials need both same-speaker and different-speaker "
                "pairs (give two or more speakers with two or more recordings each)"
            )
        where = f"{len(db.speakers)} speakers of {db.root}"
        cohort, made = make_cohort(model, a.cohort)
        scored = cuts.scored(trials, cohort)
        fitted, new_cals = fit_calibrations(scored, groups, where, a.prior)
        labels, q = scored.labels, scored.q
        report, new = {"trials": len(labels), "targets": int(labels.sum())}, {}
        for kind, s in scored.kinds.items():
            cal = new_cals[kind]
            new[kind] = cal.as_dict()
            old = model.calibration(kind == "asnorm")
            report[kind] = {
                "min_cllr": min_cllr(s, labels),
                "cllr_before": cllr(old.llr(s, q), labels) if old else None,
                "cllr_after": cal.report["cllr"],
                "cllr_after_cross_fitted": fitted["cllr"] if kind == "cosine" else None,
                "act_dcf_01_before": act_dcf(old.llr(s, q), labels, 0.01) if old else None,
                "act_dcf_01_after": cal.report["act_dcf_01"],
            }
        report["cohort_speakers"] = 0 if cohort is None else len(cohort)
        report["cohort_from"] = made
        if not a.dry_run and model.domain is not None:
            # An adapted checkpoint embeds through its domain's transform: the labelled
            # calibration is of that space, and replaces the domain's unlabelled estimate.
            model.domain.calibrations.update(new_cals)
            if made not in ("stored", "none"):
                model.domain.cohort = cohort
            model.domain.info["calibrated_with_labels"] = where
            model.domain.write(model.checkpoint.path)
            report["written"] = str(model.checkpoint.path / "domain.json")
        elif not a.dry_run:
            merged = {k: v.as_dict() for k, v in model.calibrations.items()}
            fresh = cohort if made not in ("stored", "none") else None
            model.checkpoint.write_extras({**merged, **new}, fresh)
            report["written"] = str(model.checkpoint.path / "calibration.json")
        print(json.dumps(report, indent=1) if a.json else report_text(report))
        return 0

    return guarded(body)


def report_text(report: dict) -> str:
    """The calibration report in words (``--json`` gives every figure)."""
    lines = [f"calibrated on {report['trials']:,} trials ({report['targets']:,} same-speaker)"]
    for kind in ("cosine", "asnorm"):
        r = report.get(kind)
        if not r:
            continue
        before = "" if r["cllr_before"] is None else f"{r['cllr_before']:.3f} -> "
        line = (
            f"  {kind}: Cllr {before}{r['cllr_after']:.3f} bits, actDCF(0.01) "
            + ("" if r["act_dcf_01_before"] is None else f"{r['act_dcf_01_before']:.3f} -> ")
            + f"{r['act_dcf_01_after']:.3f}; minCllr of the score alone {r['min_cllr']:.3f}"
        )
        if r.get("cllr_after_cross_fitted") is not None:
            line += f"; cross-fitted Cllr {r['cllr_after_cross_fitted']:.3f}"
        lines.append(line)
        if r["cllr_after"] < r["min_cllr"]:
            lines.append(
                "    (below minCllr: minCllr is the best any mapping of the score alone "
                "reaches; the calibration also weighs each trial's duration)"
            )
    if report.get("cohort_speakers"):
        lines.append(f"  AS-norm cohort: {report['cohort_speakers']} ({report['cohort_from']})")
    lines.append(
        f"written to {report['written']}"
        if report.get("written")
        else "nothing written (--dry-run)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
