"""Evaluate a checkpoint on a corpus: EER, minDCF, threshold, DET curve, score histogram.

Examples:
    python -m learner.evaluate --root ~/VoxCeleb1/wav -c runs/x -o eval/ --trials veri_test2.txt
    python -m learner.evaluate --embeddings emb/ --trials veri_test2.txt -o eval/
    python -m learner.evaluate --embeddings emb/ -o eval/   # ids speaker/utt: trials generated
    python -m learner.evaluate --data ~/my-speakers -c runs/x -o eval/ --n-trials 6000
    python -m learner.evaluate --data DIR -c runs/x -o eval/ --asnorm COHORT_DIR
    python -m learner.evaluate --data DIR -c runs/x -o eval/ --asnorm   # the stored cohort
    python -m learner.evaluate --data DIR -o eval/ --baseline mfcc     # no checkpoint needed

Trials come from a list or are generated from the corpus (all target pairs up to
half of --n-trials, the rest sampled non-target pairs, seeded). Lists in the
official VoxCeleb format (``1 id10270/x6uYqmx31kE/00001.wav id10273/...``: Vox1-O,
-E, -H) and Kaldi trials (``enrol test target|nontarget``) are read, their names
resolved against --data (a path below it, with or without the extension, or an
utterance id); a trial whose file is missing is skipped and counted. With
``--embeddings`` saved vectors are scored instead (no audio, no model needed); without
--trials their ids (``speaker/utterance``, as ``learner.embed`` writes for a folder of
speaker folders) give the generated trials the corpus would.
Writes OUT/summary.json, OUT/det.png, OUT/scores.png and OUT/scores.txt
(``enrol test score target|nontarget`` per trial). With
``--baseline mfcc`` the same trials are also scored with a classical baseline
(mean and standard deviation of 20 MFCCs, cosine), so every report shows how far
the trained model is above the simplest thing that works.

With a calibrated checkpoint the report also says how far its decisions can be trusted:
Cllr and minCllr (bits; their difference is what calibration loses), the actual DCF
of its Bayes decisions next to the minimum DCF at --p-target, and the false-accept
and miss rates at the stored cosine threshold and at the calibrated EER point (which
accounts for each trial's duration).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from learner.commands.cli import (
    EXIT_ERROR,
    add_progress,
    guarded,
    load_model,
    parser,
    probability,
)
from learner.scoring.baseline import mfcc_embedding
from learner.scoring.calibration import act_dcf, cllr, log_duration, min_cllr, rates_at
from learner.scoring.embedding_files import read_embeddings
from learner.scoring.scores import as_norm, eer, error_rates, min_dcf, score_trials, summarize
from learner.scoring.trials import (
    N_TRIALS,
    Names,
    TrialList,
    generate_trials,
    read_trials,
    trials_of_speakers,
)
from learner.scoring.windows import embed_files
from workers.corpus import SpeakerDatabase


def plots(out: Path, results: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    fig, ax = plt.subplots(figsize=(5, 5))
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99])

    def probit(p):
        return norm.ppf(np.clip(p, 1e-4, 1 - 1e-4))

    for name, (scores, labels) in results.items():
        _, p_miss, p_fa = error_rates(scores, labels)
        (line,) = ax.plot(probit(p_fa), probit(p_miss), label=name)
        rate, _ = eer(scores, labels)  # the EER point, on the curve's diagonal
        ax.plot(
            probit(rate), probit(rate), "o", color=line.get_color(), label=f"EER {100 * rate:.2f}%"
        )
    ax.plot(probit(ticks[[0, -1]]), probit(ticks[[0, -1]]), ":", color="0.6", lw=1)
    ax.set_xticks(probit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(probit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_xlim(probit(ticks[[0, -1]]))
    ax.set_ylim(probit(ticks[[0, -1]]))
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.set_title("DET curve")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "det.png", dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5), squeeze=False)
    for ax, (name, (scores, labels)) in zip(axes[0], results.items(), strict=True):
        edges = np.histogram_bin_edges(scores, bins=40)  # one set of bins for both classes
        for label, text in ((1, "same speaker"), (0, "different speakers")):
            part = scores[labels == label]
            ax.hist(part, bins=edges, alpha=0.6, density=True, label=f"{text} ({len(part):,})")
        ax.set_title(f"scores: {name}")
        ax.set_xlabel("AS-normed score" if "asnorm" in name else "cosine score")
        ax.set_ylabel("density (each class: area 1)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m learner.evaluate", __doc__, checkpoint=False)
    p.add_argument(
        "--data", "--root", dest="data", help="corpus root the trial list's paths are under"
    )
    p.add_argument(
        "--embeddings",
        metavar="DIR|SCP",
        help="score saved embeddings (python -m learner.embed output, or a Kaldi .scp/.ark) "
        "instead of embedding audio",
    )
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument(
        "--trials",
        help="trial list: VoxCeleb ('1 a.wav b.wav') or Kaldi ('a b target|nontarget')",
    )
    p.add_argument("--n-trials", type=int, default=N_TRIALS, help="trials to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", choices=["mfcc"], help="also score the classical baseline")
    p.add_argument(
        "--asnorm",
        nargs="?",
        const="",
        metavar="COHORT_DIR",
        help="AS-Norm: against a cohort made from this folder (one group per sub-folder, or per file directly in it), or (no folder) the checkpoint's stored cohort",
    )
    p.add_argument(
        "--p-target",
        type=probability,
        default=0.01,
        help="target prior of the actual and minimum DCF in the calibration report",
    )
    add_progress(p)
    a = p.parse_args(argv)
    if a.embeddings:
        if a.baseline or a.asnorm is not None:
            p.error("--baseline and --asnorm need audio: give --data, not --embeddings")
    elif not a.data:
        p.error("give --data (a corpus) or --embeddings (saved vectors)")
    elif not a.checkpoint and not a.baseline:
        p.error("give --checkpoint, --baseline mfcc, or both")

    def body() -> int:
        if a.embeddings:
            results, summary, names = _from_embeddings(a)
        else:
            results, summary, names = _from_audio(a)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        plots(out, results)
        first = next(iter(results))
        scores, labels = results[first]
        kind = ("nontarget", "target")
        (out / "scores.txt").write_text(
            "".join(
                f"{x} {y} {s:.5f} {kind[int(lab)]}\n"
                for (x, y), s, lab in zip(names[first], scores, labels, strict=True)
            )
        )
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        if summary.get("missing_trials"):
            print(
                f"skipped {summary['missing_trials']} trial(s) whose file is not in the corpus "
                f"(e.g. {summary['missing_example']})"
            )
        for name in results:
            r = summary[name]
            print(
                f"{name}: EER {100 * r['eer']:.2f}%  minDCF(0.01) {r['min_dcf_01']:.3f}  "
                f"minDCF(0.05) {r['min_dcf_05']:.3f}  threshold {r['threshold']:.3f}  "
                f"({r['trials']} trials, {r['targets']} target)"
            )
            c = r.get("calibration")
            if c:
                print(
                    f"  calibration: Cllr {c['cllr']:.3f} (min {c['min_cllr']:.3f}), actDCF"
                    f"({c['p_target']:g}) {c['act_dcf']:.3f} vs minDCF {c['min_dcf']:.3f}; at "
                    f"the calibrated EER point FA {100 * c['fa_at_eer_point']:.1f}%, miss "
                    f"{100 * c['miss_at_eer_point']:.1f}%"
                    + (
                        f"; at the stored threshold FA {100 * c['fa_at_threshold']:.1f}%, "
                        f"miss {100 * c['miss_at_threshold']:.1f}%"
                        if "fa_at_threshold" in c
                        else ""
                    )
                )
        print(f"wrote {out}/summary.json, scores.txt, det.png, scores.png")
        return 0 if results else EXIT_ERROR

    return guarded(body)


Results = dict[str, tuple[np.ndarray, np.ndarray]]


def _listed(path: str, names: Names, summary: dict) -> TrialList:
    listed = read_trials(path, names)
    summary.update(missing_trials=listed.missing, missing_example=listed.example)
    if not listed.trials:
        raise ValueError(
            f"{path}: none of its {listed.missing} trial(s) name a file that is here "
            f"(e.g. {listed.example}); is --data the folder the list's paths are under?"
        )
    return listed


def _from_embeddings(a: argparse.Namespace) -> tuple[Results, dict, dict]:
    keys, emb, fingerprint = read_embeddings(a.embeddings)
    if a.checkpoint:
        model = load_model(a).fingerprint
        if fingerprint and fingerprint != model:
            raise ValueError(
                f"{a.embeddings} was embedded with model {fingerprint}, not {model} "
                f"({a.checkpoint}): scores of different models are not comparable"
            )
    summary: dict = {"embeddings": str(a.embeddings), "model": fingerprint}
    if a.trials:
        listed = _listed(a.trials, Names([[k] for k in keys]), summary)
        trials, names = listed.trials, listed.names
    else:
        trials = trials_of_ids(keys, a.n_trials, a.seed, a.embeddings)
        names = [(keys[i], keys[j]) for _, i, j in trials]
    scores, labels = score_trials(emb, trials)
    summary.update(trials=len(trials), targets=int(labels.sum()))
    summary["embeddings_scored"] = summarize(scores, labels).as_dict()
    return {"embeddings_scored": (scores, labels)}, summary, {"embeddings_scored": names}


def trials_of_ids(keys: list[str], n_trials: int, seed: int, where) -> list:
    """Generated trials over saved vectors whose ids are ``speaker/utterance`` (what
    ``learner.embed`` writes for a corpus folder): the speaker is the id's first part."""
    plain = [k for k in keys if "/" not in k]
    if plain:
        raise ValueError(
            f"{where}: ids such as {plain[0]!r} carry no speaker (speaker/utterance): give "
            "--trials, or embed a folder with one sub-folder per speaker"
        )
    speakers = [k.split("/", 1)[0] for k in keys]
    if len(set(speakers)) < 2:
        raise ValueError(f"{where}: one speaker only; trials need two or more")
    return trials_of_speakers(speakers, n_trials, seed)


def _from_audio(a: argparse.Namespace) -> tuple[Results, dict, dict]:
    from cluster.config import FeatureConfig

    model = None
    if a.checkpoint:
        model = load_model(a)
    feature_cfg = model.cfg.features if model else FeatureConfig()
    db = SpeakerDatabase.scan(a.data)
    summary: dict = {"data": str(db.root)}
    if a.trials:
        listed = _listed(a.trials, Names([[u.path, u.utt_id] for u in db.utterances]), summary)
        trials, trial_names = listed.trials, listed.names
    else:
        trials = generate_trials(db, a.n_trials, a.seed)
        ids = [u.utt_id for u in db.utterances]
        trial_names = [(ids[i], ids[j]) for _, i, j in trials]
    summary.update(trials=len(trials), targets=int(sum(t[0] for t in trials)))
    if model is not None:
        summary.update(training_speaker_trials(model, db, trials))
    used = sorted({i for t in trials for i in t[1:]})
    results: Results = {}
    names: dict[str, list[tuple[str, str]]] = {}
    systems = ([("model", None)] if model else []) + ([("mfcc", "mfcc")] if a.baseline else [])
    paths = [db.abspath(i) for i in range(len(db.utterances))]
    seconds: dict[str, float] = {}

    def embed_model(path) -> np.ndarray:
        vector, quality = model.embed(path)
        seconds[str(path)] = quality.speech_s
        return vector

    from learner.inference.recordings import progress_bar

    for name, kind in systems:
        embed_one = (lambda p: mfcc_embedding(p, feature_cfg)) if kind else embed_model
        with progress_bar(len(used), f"embedding ({name})", "file", a.progress) as bar:

            def embed_file(path, embed_one=embed_one, bar=bar) -> np.ndarray:
                bar.update(1)
                return embed_one(path)

            emb, ok = embed_files(paths, embed_file, used)
        keep = [k for k, t in enumerate(trials) if ok[t[1]] and ok[t[2]]]
        if not keep:
            raise ValueError(
                f"{name}: every one of the {len(trials)} trials was skipped: none of their "
                "files could be embedded (see the warnings above)"
            )
        kept = [trials[k] for k in keep]
        scores, labels = score_trials(emb, kept)
        if kind is None and a.asnorm is not None:
            cohort = stored_or_folder_cohort(model, a.asnorm)
            scores = as_norm(scores, emb, kept, cohort)
            summary["asnorm_cohort"] = len(cohort)
        results[name] = (scores, labels)
        names[name] = [trial_names[k] for k in keep]
        summary[name] = summarize(scores, labels).as_dict()
        summary[name]["skipped_trials"] = len(trials) - len(kept)
        if kind is None and a.asnorm is None and model.threshold is not None:
            fa, miss = rates_at(scores, labels, model.threshold)
            summary[name].update(fa_at_stored_threshold=fa, miss_at_stored_threshold=miss)
        cal = model.calibration(a.asnorm is not None) if kind is None else None
        if cal is not None:
            secs = np.array([seconds.get(str(p), 0.0) for p in paths])
            t = np.asarray(kept)
            q = log_duration(secs[t[:, 1]], secs[t[:, 2]])
            summary[name]["calibration"] = calibration_summary(
                cal,
                scores,
                labels,
                q,
                a.p_target,
                None if a.asnorm is not None else model.threshold,
            )
    return results, summary, names


def training_speaker_trials(model, db: SpeakerDatabase, trials) -> dict:
    """How many trials involve a speaker the checkpoint's run trained on (its
    ``speakers.json``), said on stdout: such trials flatter the model. Empty when the run is
    not known (an ONNX export, a checkpoint outside its run, a run from before the file)."""
    from cluster.runs import RunDir

    run = RunDir.of_checkpoint(model.source) if model.checkpoint is not None else None
    listed = run.read_speakers() if run is not None else None
    if not listed:
        return {}
    training = set(listed.get("training", []))
    names = [u.speaker for u in db.utterances]
    mixed = sum(1 for t in trials if names[t[1]] in training or names[t[2]] in training)
    seen = sorted({names[i] for t in trials for i in t[1:] if names[i] in training})
    if mixed:
        print(
            f"note: {mixed} of {len(trials)} trials involve {len(seen)} speaker(s) the run "
            f"trained on (e.g. {', '.join(seen[:3])}; {run.speakers_file}); their scores "
            "flatter the model"
        )
    return {"trials_with_training_speakers": mixed, "training_speakers_seen": len(seen)}


def stored_or_folder_cohort(model, folder: str) -> np.ndarray:
    """The cohort for AS-norm: the checkpoint's stored cohort (``""``), or one made from
    ``folder`` by the one cohort rule (``learner.inference.recordings.folder_cohort``)."""
    if not folder:
        if model.scoring_cohort is None:
            raise ValueError(
                f"{model.source} stores no cohort: give --asnorm COHORT_DIR, or run python -m "
                "learner.calibrate on it"
            )
        return model.scoring_cohort
    from learner.inference.recordings import folder_cohort

    return folder_cohort(model, folder)


def calibration_summary(cal, scores, labels, q, p_target: float, threshold) -> dict:
    """How far the checkpoint's calibrated decisions can be trusted on these trials."""
    llr = cal.llr(scores, q)
    eer_point = np.array([cal.threshold("eer", 0.0, x) for x in q])
    accept = scores >= eer_point
    y = np.asarray(labels).astype(bool)
    out = {
        "kind": cal.kind,
        "fitted_on": cal.fitted_on,
        "p_target": p_target,
        "cllr": cllr(llr, y),
        "min_cllr": min_cllr(scores, y),
        "act_dcf": act_dcf(llr, y, p_target),
        "min_dcf": min_dcf(scores, y, p_target)[0],
        "fa_at_eer_point": float(np.mean(accept[~y])),
        "miss_at_eer_point": float(np.mean(~accept[y])),
    }
    if threshold is not None:
        out["fa_at_threshold"], out["miss_at_threshold"] = rates_at(scores, y, threshold)
    return out


if __name__ == "__main__":
    sys.exit(main())
