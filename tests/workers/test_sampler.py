from collections import Counter

import numpy as np
import pytest

from cluster.config import load_config
from tests.fakes import write_bad_files, write_wav
from workers.corpus import CorpusError, SpeakerDatabase
from workers.producer import BatchProducer
from workers.sampler import TripletSampler


def check_triplets(db, idx, labels, b):
    a, p, n = idx[:b], idx[b : 2 * b], idx[2 * b :]
    assert (a != p).all()
    for i in range(b):
        assert db.utterances[a[i]].speaker == db.utterances[p[i]].speaker
        assert db.utterances[a[i]].speaker != db.utterances[n[i]].speaker
        assert labels[i] == db.speaker_index[db.utterances[a[i]].speaker]
        assert labels[2 * b + i] == db.speaker_index[db.utterances[n[i]].speaker]


def test_invariants_on_real_speech(speech_root):
    db = SpeakerDatabase.scan(speech_root)
    s = TripletSampler(db, triplets=32, seed=3)
    singles = {sp for sp in db.speakers if len(db.by_speaker[sp]) == 1}
    assert singles  # the shared set has single-utterance speakers
    negatives = set()
    anchor_counts = Counter()
    for _ in range(60):
        idx, labels = s.sample()
        check_triplets(db, idx, labels, 32)
        anchors = [db.utterances[i].speaker for i in idx[:32]]
        assert not set(anchors) & singles
        anchor_counts.update(anchors)
        negatives |= {db.utterances[i].speaker for i in idx[64:]}
    assert negatives & singles  # single-utterance speakers do serve as negatives
    # Even draws: 60 * 32 anchors over the anchor speakers, each seen 7 or 8 times.
    counts = np.array(list(anchor_counts.values()))
    assert len(anchor_counts) == len(db.anchor_speakers())
    assert counts.max() - counts.min() <= 1


def test_seeded_and_resumable(tone_corpus):
    db = SpeakerDatabase.scan(tone_corpus)
    a, b = TripletSampler(db, triplets=4, seed=7), TripletSampler(db, triplets=4, seed=7)
    for _ in range(3):
        np.testing.assert_array_equal(a.sample()[0], b.sample()[0])
    state = a.state()
    after = [a.sample()[0] for _ in range(3)]
    c = TripletSampler(db, triplets=4, seed=99)
    c.set_state(state)
    for want in after:
        np.testing.assert_array_equal(c.sample()[0], want)
    assert not np.array_equal(
        TripletSampler(db, triplets=4, seed=8).sample()[0],
        TripletSampler(db, triplets=4, seed=7).sample()[0],
    )


@pytest.mark.parametrize("weighting, ratio", [("utterance", 4.0), ("sqrt", 2.0)])
def test_weighting_draws_anchors_by_their_utterances(tmp_path, weighting, ratio):
    """Speakers with 8 utterances are anchors 4x (``utterance``) or 2x (``sqrt``) as often
    as speakers with 2; the stream stays seeded and resumable."""
    for s, n in enumerate((2, 2, 8, 8)):
        for u in range(n):
            write_wav(tmp_path / f"s{s}" / f"{u}.wav", 0.6)
    db = SpeakerDatabase.scan(tmp_path)
    sampler = TripletSampler(db, triplets=50, seed=1, weighting=weighting)
    counts = Counter()
    for _ in range(40):
        idx, labels = sampler.sample()
        check_triplets(db, idx, labels, 50)
        counts.update(db.utterances[i].speaker for i in idx[:50])
    many, few = counts["s2"] + counts["s3"], counts["s0"] + counts["s1"]
    assert abs(many / few - ratio) < 0.25 * ratio
    state = sampler.state()
    after = sampler.sample()[0]
    again = TripletSampler(db, triplets=50, seed=5, weighting=weighting)
    again.set_state(state)
    np.testing.assert_array_equal(again.sample()[0], after)
    for i in db.by_speaker["s2"][1:]:  # one utterance left: s2 is no anchor any more
        again.discard(i)
    assert "s2" not in {db.utterances[i].speaker for i in again.sample()[0][:50]}
    even = TripletSampler(db, triplets=50, seed=1)
    evens = Counter(db.utterances[i].speaker for _ in range(8) for i in even.sample()[0][:50])
    assert max(evens.values()) - min(evens.values()) <= 1
    with pytest.raises(ValueError, match="weighting"):
        TripletSampler(db, triplets=4, weighting="files")


def test_single_utterance_speakers_never_hang(tmp_path):
    write_wav(tmp_path / "a" / "1.wav")
    write_wav(tmp_path / "b" / "1.wav")
    db = SpeakerDatabase.scan(tmp_path)
    with pytest.raises(CorpusError, match="0 with 2 or more"):
        TripletSampler(db, triplets=4)


def test_producer_survives_every_bad_file(tmp_path):
    for s in range(3):
        for u in range(2):
            write_wav(tmp_path / f"s{s}" / f"{u}.wav", 1.0, f0=120 + 40 * s)
    write_bad_files(tmp_path / "s1")
    # A file whose header is fine but whose body was overwritten later: decodes as noise-free zero.
    import soundfile as sf

    sf.write(tmp_path / "s2" / "silent2.wav", np.zeros(24000, dtype=np.float32), 16000)
    cfg = load_config("smoke", [f"data.path={tmp_path}", "data.eval_fraction=0"])
    import queue

    q = queue.Queue(maxsize=1000)
    producer = BatchProducer.from_config(cfg, 0, q)
    stats = producer.run(max_batches=30)
    assert stats["built"] == 30 and q.qsize() == 30
    assert stats["rejected"].get("no_speech", 0) >= 1  # silent files found and discarded
    discarded = {producer.sampler.db.utterances[i].path for i in producer.sampler.discarded}
    assert discarded <= {"s1/silent.wav", "s2/silent2.wav"}
    assert discarded  # at least one silent file was drawn, found and dropped
    while not q.empty():
        q.get().validate(spec=cfg.features.fingerprint())
    # The rejection is remembered in the cache: a new producer does not decode it again.
    store = producer.source.store
    db = producer.sampler.db
    assert any(store.status(db.utterances[i]) == "rejected" for i in producer.sampler.discarded)
