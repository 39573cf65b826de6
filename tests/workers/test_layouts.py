"""Real corpus layouts as users unpack them, built from real speech (tests/data/speech) with
each corpus's own names: LibriSpeech, VoxCeleb 1 and 2 (AAC), CN-Celeb, VCTK 0.92, Kaldi
data folders, CSV manifests, several roots in one run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.fakes import to_m4a
from workers.audio import audio_info, load_audio
from workers.corpus import CorpusError, SpeakerDatabase


@pytest.fixture(scope="module")
def segments(speech_subset) -> list[list[Path]]:
    """10 speakers x 3 real FLAC segments."""
    return [sorted(d.glob("*.flac")) for d in sorted(speech_subset.iterdir()) if d.is_dir()]


def link(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)
    return dst


def to_wav(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    x, sr = sf.read(src, dtype="int16")
    sf.write(dst, x, sr, subtype="PCM_16")
    return dst


def scan(root, **kw) -> SpeakerDatabase:
    return SpeakerDatabase.scan(root, use_cache=False, **kw)


def test_librispeech_root_with_several_subsets_and_one_subset(tmp_path, segments):
    root = tmp_path / "LibriSpeech"
    (root.mkdir(parents=True))
    for name in ("README.TXT", "SPEAKERS.TXT", "CHAPTERS.TXT", "LICENSE.TXT"):
        (root / name).write_text("LibriSpeech ASR corpus\n")
    subsets = ("train-clean-100", "train-clean-360", "train-other-500")
    for s, files in enumerate(segments[:6]):
        spk, chapter = str(100 + s), str(2000 + s)
        folder = root / subsets[s % 3] / spk / chapter
        for u, f in enumerate(files):
            link(f, folder / f"{spk}-{chapter}-{u:04d}.flac")
        (folder / f"{spk}-{chapter}.trans.txt").write_text("0000 SOME WORDS\n")
    db = scan(root)
    assert db.layout == "librispeech"
    assert db.speakers == [str(100 + s) for s in range(6)] and len(db.utterances) == 18
    assert db.skipped["not_audio"] and "outside_layout" not in db.skipped
    one = scan(root / "train-clean-100")
    assert one.layout == "librispeech" and one.speakers == ["100", "103"]
    assert db.utterances[0].utt_id == "train-clean-100/100/2000/100-2000-0000"


def test_voxceleb1_wav_and_voxceleb2_aac_as_unpacked(tmp_path, segments):
    vox1, vox2 = tmp_path / "VoxCeleb1", tmp_path / "VoxCeleb2"
    for s, files in enumerate(segments[:3]):
        for u, f in enumerate(files):
            video = f"vid{s}{u % 2}xYz-_A"
            to_wav(f, vox1 / "wav" / f"id1{s:04d}" / video / f"{u + 1:05d}.wav")
            to_m4a(f, vox2 / "dev" / "aac" / f"id0{s:04d}" / video / f"{u + 1:05d}.m4a")
    (vox1 / "vox1_meta.csv").write_text("VoxCeleb1 ID\tVGGFace1 ID\n")
    for root in (vox1, vox1 / "wav"):
        db = scan(root)
        assert db.layout == "voxceleb" and db.speakers == ["id10000", "id10001", "id10002"]
    for root in (vox2, vox2 / "dev" / "aac"):
        db = scan(root)
        assert db.layout == "voxceleb" and db.speakers == ["id00000", "id00001", "id00002"]
        assert len(db.utterances) == 9 and "unsupported" not in db.skipped
    # The AAC decodes to the same speech: same rate, about the same length and level.
    m4a = db.abspath(0)
    frames, sr = audio_info(m4a)
    ref = load_audio(segments[0][0])
    got = load_audio(m4a)
    assert sr == 16000 and abs(frames / sr - len(ref) / 16000) < 0.2
    assert abs(len(got) - len(ref)) < 0.2 * 16000
    assert np.std(got) == pytest.approx(np.std(ref), rel=0.15)


def test_cnceleb_and_vctk_with_a_microphone_choice(tmp_path, segments):
    cn = tmp_path / "CN-Celeb_flac" / "data"
    genres = ("speech", "singing", "interview")
    for s, files in enumerate(segments[:3]):
        for u, f in enumerate(files):
            link(f, cn / f"id0{s:04d}" / f"{genres[u]}-01-{u + 1:03d}.flac")
    db = scan(cn.parent)
    assert db.layout == "cnceleb" and db.speakers == ["id00000", "id00001", "id00002"]

    vctk = tmp_path / "VCTK-Corpus-0.92" / "wav48_silence_trimmed"
    for s, files in enumerate(segments[:3]):
        spk = f"p{225 + s}"
        for u, f in enumerate(files):
            for mic in ("mic1", "mic2"):
                link(f, vctk / spk / f"{spk}_{u + 1:03d}_{mic}.flac")
        (vctk.parent / "txt" / spk).mkdir(parents=True)
    db = scan(vctk.parent)
    assert db.layout == "vctk" and db.speakers == ["p225", "p226", "p227"]
    assert len(db.utterances) == 9 and all(u.path.endswith("_mic1.flac") for u in db.utterances)
    assert len(db.skipped["other_mic"]) == 9
    assert len(scan(vctk.parent, mic="both").utterances) == 18


def test_kaldi_data_folder(tmp_path, segments):
    recipe = tmp_path / "egs" / "s5"
    data = recipe / "data" / "train"
    data.mkdir(parents=True)
    scp, u2s = [], []
    for s, files in enumerate(segments[:3]):
        for u, f in enumerate(files):
            utt = f"spk{s}-utt{u}"
            if u == 0:  # relative to the recipe folder, as Kaldi recipes write them
                where = os.path.relpath(link(f, recipe / "audio" / f"{utt}.flac"), recipe)
            else:
                where = str(f)
            scp.append(f"{utt} {where}")
            u2s.append(f"{utt} spk{s}")
    scp.append("spk0-utt9 sox /nowhere/x.wav -t wav - |")
    scp.append("spk0-utt8 /nowhere/missing.wav")
    u2s += ["spk0-utt9 spk0", "spk0-utt8 spk0"]
    (data / "wav.scp").write_text("\n".join(scp) + "\n")
    (data / "utt2spk").write_text("\n".join(u2s) + "\n")
    db = scan(data)
    assert db.layout == "kaldi" and db.speakers == ["spk0", "spk1", "spk2"]
    assert sorted(u.utt_id for u in db.utterances)[:3] == ["spk0-utt0", "spk0-utt1", "spk0-utt2"]
    assert db.skipped["piped"] == ["spk0-utt9"] and len(db.skipped["missing"]) == 1
    assert db.abspath(0).is_file()

    (data / "wav.scp").write_text("a sox x.wav -t wav - |\nb flac -dc y.flac |\n")
    with pytest.raises(CorpusError, match="piped commands .* not run"):
        scan(data)
    (data / "segments").write_text("a-1 a 0.0 1.0\n")
    with pytest.raises(CorpusError, match="segments"):
        scan(data)


def test_csv_manifest_and_several_roots(tmp_path, segments):
    rows = ["path,speaker,seconds"]
    for s, files in enumerate(segments[:3]):
        for u, f in enumerate(files):
            rows.append(f"{os.path.relpath(link(f, tmp_path / 'm' / f'a{s}{u}.flac'), tmp_path)},"
                        f"alice{s},2.0")  # fmt: skip
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    db = scan(tmp_path / "list.csv")
    assert db.layout == "manifest" and db.speakers == ["alice0", "alice1", "alice2"]
    (tmp_path / "bad.csv").write_text("just-a-path.wav\n")
    with pytest.raises(CorpusError, match="row 1"):
        scan(tmp_path / "bad.csv")

    libri = tmp_path / "LibriSpeech" / "dev-clean"
    vctk = tmp_path / "VCTK" / "wav48_silence_trimmed"
    for s, files in enumerate(segments[3:6]):
        for u, f in enumerate(files):
            link(f, libri / f"{s + 1}" / "10" / f"{s + 1}-10-{u:04d}.flac")
            link(f, vctk / f"p{s + 1}" / f"p{s + 1}_{u + 1:03d}_mic1.flac")
    both = scan(f"{libri.parent}{os.pathsep}{vctk.parent}")
    assert both.speakers == [f"LibriSpeech/{i}" for i in (1, 2, 3)] + [
        f"VCTK/p{i}" for i in (1, 2, 3)
    ]
    assert len(both.utterances) == 18 and both.layout == "librispeech+vctk"
    assert all(both.abspath(i).is_file() for i in range(len(both.utterances)))


def test_an_unusable_corpus_says_root_layout_and_skips(tmp_path, segments):
    root = tmp_path / "vox" / "wav"
    for u, f in enumerate(segments[0]):
        link(f, root / "id10001" / "video" / f"{u + 1:05d}.flac")
    (root / "id10001" / "video" / "notes.mid").write_bytes(b"MThd")
    (root / "id10001" / "00009.flac").write_bytes(b"")  # not where VoxCeleb keeps audio
    with pytest.raises(CorpusError) as err:
        scan(root)
    text = str(err.value)
    assert str(root) in text and "voxceleb layout" in text and "1 usable speaker" in text
    assert "outside_layout: 1" in text and "unsupported: 1" in text


def test_manifest_paths_outside_its_folder_are_said_and_a_file_under_two_speakers_once(
    tmp_path, segments, caplog
):
    outside = [link(f, tmp_path / "elsewhere" / f"o{u}.flac") for u, f in enumerate(segments[0])]
    inside = [link(f, tmp_path / "m" / "in" / f"i{u}.flac") for u, f in enumerate(segments[1])]
    rows = ["path,speaker"]
    rows += [f"../elsewhere/{p.name},bob" for p in outside[:2]]  # relative, outside
    rows += [f"{outside[2]},bob"]  # absolute
    rows += [f"in/{p.name},carol" for p in inside]
    rows += [f"in/{inside[0].name},dave", f"./in/{inside[1].name},dave"]  # already carol's
    rows += [f"in/{inside[2].name},carol"]  # listed twice, same speaker: no clash
    (tmp_path / "m" / "list.csv").write_text("\n".join(rows) + "\n")
    db = scan(tmp_path / "m" / "list.csv")
    assert db.speakers == ["bob", "carol"]
    assert sorted(db.skipped["duplicate"]) == [f"./in/{inside[1].name}", f"in/{inside[0].name}"]
    assert "3 listed file(s) lie outside" in caplog.text
    assert "2 file(s) listed under two speakers" in caplog.text


def test_a_listed_device_or_pipe_is_skipped_as_no_regular_file(tmp_path, segments, caplog):
    """``/dev/zero`` in a manifest was reported as "not found"; it is there, but it is no
    recording (it never ends; a pipe blocks its reader): skipped, saying so."""
    inside = [link(f, tmp_path / "m" / "in" / f"i{u}.flac") for u, f in enumerate(segments[1])]
    bobs = [link(f, tmp_path / "m" / "b" / f"b{u}.flac") for u, f in enumerate(segments[0])]
    os.mkfifo(tmp_path / "m" / "pipe.flac")
    rows = ["path,speaker", *[f"in/{p.name},carol" for p in inside]]
    rows += [f"b/{p.name},bob" for p in bobs]
    rows += ["/dev/zero,bob", "pipe.flac,bob", "gone.flac,bob"]
    (tmp_path / "m" / "list.csv").write_text("\n".join(rows) + "\n")
    db = scan(tmp_path / "m" / "list.csv")
    assert sorted(db.skipped["not_a_file"]) == ["/dev/zero", "pipe.flac"]
    assert db.skipped["missing"] == ["gone.flac"]
    assert "not a regular file" in caplog.text
