import numpy as np
import pytest
import soundfile as sf

from tests.fakes import voice, write_wav
from workers.audio import NoSpeech, UnreadableAudio, load_audio, remove_silence, speech_mask


def test_resample_and_mixdown(tmp_path):
    write_wav(tmp_path / "a.wav", 1.0, sr=44100, channels=2)
    y = load_audio(tmp_path / "a.wav", 16000)
    assert y.dtype == np.float32 and abs(len(y) - 16000) <= 1


def test_mp3_and_ogg_decode(tmp_path):
    x = voice(1.0)
    sf.write(tmp_path / "a.ogg", x, 16000)
    sf.write(tmp_path / "a.mp3", x, 16000)
    for name in ("a.ogg", "a.mp3"):
        y = load_audio(tmp_path / name)
        assert abs(len(y) - 16000) < 2000 and np.abs(y).max() > 0.1


def test_vad_removes_inner_and_edge_silence():
    sr = 16000
    speech = voice(1.0)
    gap = np.zeros(sr // 2, dtype=np.float32)
    x = np.concatenate([gap, speech, gap, speech, gap])
    y = remove_silence(x, sr)
    # 2 s of speech kept plus at most 50 ms of hangover and window overlap around each
    # of the four speech edges; of the 1.5 s of silence at least 1.2 s is dropped.
    assert 2 * sr <= len(y) <= 2 * sr + 4 * 0.075 * sr
    mask = speech_mask(x)
    assert not mask[:40].any() and mask[60:140].all()


def test_silence_is_refused():
    with pytest.raises(NoSpeech, match="no speech detected"):
        remove_silence(np.zeros(16000, dtype=np.float32))
    with pytest.raises(NoSpeech):
        remove_silence(1e-4 * np.random.default_rng(0).standard_normal(16000).astype(np.float32))


def test_unreadable_is_an_audio_error(tmp_path):
    (tmp_path / "x.wav").write_text("not audio")
    with pytest.raises(UnreadableAudio, match="cannot decode"):
        load_audio(tmp_path / "x.wav")


def test_vad_on_real_speech_keeps_most(speech_root):
    y = load_audio(sorted((speech_root / "arctic_aew").glob("*.wav"))[0])
    kept = len(remove_silence(y)) / len(y)
    assert 0.5 < kept <= 1.0


def test_long_files_are_decoded_in_blocks_with_bounded_memory(tmp_path, monkeypatch):
    """A long recording (here 90 s of 48 kHz stereo, with the threshold lowered) is decoded
    block by block: the features match the whole-file path and the peak memory is a
    fraction of it, measured side by side."""
    import tracemalloc

    import soundfile as sf

    from cluster.config import FeatureConfig
    from tests.fakes import voice
    from workers import extract
    from workers.extract import LogMelExtractor

    x = np.concatenate([voice(3.0, 48000, f0) for f0 in (110, 150, 190, 230, 270, 130)] * 5)
    sf.write(tmp_path / "long.wav", np.stack([x, x], axis=1), 48000)
    seconds = len(x) / 48000
    logmel = LogMelExtractor(FeatureConfig())

    def peak(long_seconds: float) -> tuple[np.ndarray, int]:
        monkeypatch.setattr(extract, "LONG_SECONDS", long_seconds)
        tracemalloc.start()
        feats = logmel(tmp_path / "long.wav", seconds)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return feats, top

    monkeypatch.setattr(extract, "BLOCK_SECONDS", 9.0)
    whole, whole_peak = peak(1e9)
    blocks, block_peak = peak(10.0)
    assert abs(len(blocks) - len(whole)) <= 0.02 * len(whole)
    # The first frames come from the first block alone: they match the whole-file path.
    assert np.abs(blocks[:50].astype(float) - whole[:50].astype(float)).mean() < 0.5
    print(
        f"peak traced memory: whole {whole_peak / 2**20:.1f} MiB, blocks {block_peak / 2**20:.1f} MiB"
    )
    assert block_peak < 0.3 * whole_peak, (block_peak, whole_peak)
