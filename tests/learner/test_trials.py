"""Trial lists (learner.scoring.trials): generated trials and the two list formats."""

from __future__ import annotations

from pathlib import Path

from learner.scoring.trials import Names, generate_trials, read_trials
from workers.corpus import SpeakerDatabase, Utterance


def corpus(per_speaker: dict[str, int]) -> SpeakerDatabase:
    utts = [
        Utterance(f"{s}/{k}.wav", s, 2.0, 16000) for s, n in per_speaker.items() for k in range(n)
    ]
    return SpeakerDatabase(Path("/corpus"), "spk/utt", utts)


def test_generated_trials_take_every_target_pair_then_seeded_non_targets():
    db = corpus({"a": 3, "b": 2, "c": 4})
    trials = generate_trials(db, 20, seed=1)
    speaker = [u.speaker for u in db.utterances]
    targets = [t for t in trials if t[0] == 1]
    assert len(targets) == 3 + 1 + 6  # every pair within a speaker (half of 20)
    assert all((speaker[i] == speaker[j]) == bool(label) for label, i, j in trials)
    assert all(i < j for _, i, j in trials) and len(set(trials)) == len(trials)
    assert len(trials) == 20 and trials == generate_trials(db, 20, seed=1)
    assert trials != generate_trials(db, 20, seed=2)
    # More asked than there are pairs: every pair once (36 of 9 utterances).
    assert len(generate_trials(db, 100)) == 36
    # Few trials asked: targets capped at half; never more non-targets than exist.
    assert sum(t[0] for t in generate_trials(db, 6, seed=0)) == 3
    small = corpus({"a": 2, "b": 1})
    assert sorted(generate_trials(small, 100)) == [(0, 0, 2), (0, 1, 2), (1, 0, 1)]


def test_lists_in_voxceleb_and_kaldi_formats_resolve_names_and_count_the_missing(tmp_path):
    db = corpus({"id1": 2, "id2": 1})
    names = Names([[u.path, u.utt_id] for u in db.utterances])
    listed = tmp_path / "list.txt"
    listed.write_text(
        "1 id1/0.wav id1/1.wav\n"  # VoxCeleb, with extension
        "id1/0 id2/0 nontarget\n"  # Kaldi, without
        "0 id1/1.wav id9/0.wav\n"  # a file not in the corpus: skipped, counted
    )
    out = read_trials(listed, names)
    assert out.trials == [(1, 0, 1), (0, 0, 2)]
    assert out.names == [("id1/0.wav", "id1/1.wav"), ("id1/0", "id2/0")]
    assert out.missing == 1 and out.example == "id9/0.wav"
