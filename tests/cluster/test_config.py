import pytest
import yaml

from cluster.config import PRESET_DIR, ConfigError, load_config, preset_names, replace


def test_presets_load_and_differ():
    assert {"demo", "smoke", "base"} <= set(preset_names())
    demo, smoke, base = (load_config(n) for n in ("demo", "smoke", "base"))
    assert base.sampler.frames == 400 and base.model.width == 1.0
    assert smoke.sampler.triplets < demo.sampler.triplets
    assert demo.preset == "demo"


def test_small_is_the_demo_recipe_wider_and_longer_and_what_data_gets_by_default():
    from learner.__main__ import parse_args, resolve_config

    demo, small = load_config("demo"), load_config("small")
    # The recipe measured on real speech: the demo's, with twice the filters and 20 minutes.
    assert small.model.width == 2 * demo.model.width and small.learner.max_minutes == 20
    for section in ("features", "augment", "sampler", "data"):  # features cached once serve both
        assert getattr(small, section) == getattr(demo, section), section
    wider = replace(demo, model={"width": small.model.width}, learner={"max_minutes": 20})
    assert (wider.model, wider.learner) == (small.model, small.learner)

    def preset(*argv: str) -> str:
        return resolve_config(parse_args(list(argv)))[0].preset

    assert preset("--data", "/corpus") == "small"
    assert preset() == "demo"  # the synthetic corpus
    assert preset("--data", "/corpus", "--preset", "demo") == "demo"


def test_override_types_and_scientific_notation():
    cfg = load_config("demo", ["learner.lr=3e-4", "sampler.frames=200", "data.path=/x"])
    assert cfg.learner.lr == pytest.approx(3e-4)
    assert cfg.sampler.frames == 200
    assert cfg.data.path == "/x"
    assert load_config("demo", ["learner.eval_every=0x10"]).learner.eval_every == 16


@pytest.mark.parametrize(
    "override, text",
    [
        ("data.path=0755", "0755"),  # YAML 1.1: the octal integer 493
        ("data.path=10:30", "10:30"),  # YAML 1.1: the sexagesimal integer 630
        ("data.cache_dir=1e3", "1e3"),
        ("data.feature_cache=off", "off"),  # YAML 1.1: the boolean False
        ("data.path=null", "null"),
        ("data.path= /my corpus ", "/my corpus"),
    ],
)
def test_string_fields_keep_the_text_as_typed(override, text):
    key = override.split("=")[0].split(".")[1]
    assert getattr(load_config("demo", [override]).data, key) == text


@pytest.mark.parametrize(
    "override, message",
    [
        ("learner.lrr=1", "unknown key learner.lrr"),
        ("nosuch.x=1", "unknown key nosuch"),
        ("sampler.frames=abc", "sampler.frames: expected int"),
        ("learner.mining=hardest", "learner.mining"),
        ("learner.lr", "must look like"),
        ("learner.lr=nan", "learner.lr: must be a finite number"),
        ("learner.lr=-1e-3", "learner.lr: must be at least 0"),
        ("sampler.triplets=0", "sampler.triplets: must be at least 1"),
        ("features.hop_ms=0", "features.hop_ms: must be greater than 0"),
        ("producer.queue_size=0", "producer.queue_size: must be at least 1"),
        ("data.eval_fraction=1.5", "data.eval_fraction: must be at most"),
        ("learner.keep_checkpoints=0", "learner.keep_checkpoints"),
        ("model.pooling=max", "model.pooling"),
        ("model.input_norm=none", "model.input_norm"),
        ("sampler.weighting=files", "sampler.weighting"),
        ("learner.batch_scale=0", "learner.batch_scale: must be greater than 0"),
        ("learner.batch_weight=-1", "learner.batch_weight: must be at least 0"),
    ],
)
def test_bad_overrides_are_clear(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", [override])


def test_unknown_preset_lists_known():
    with pytest.raises(ConfigError, match="presets: base, demo, small, smoke"):
        load_config("nope")


def test_yaml_file_and_roundtrip(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("learner: {max_steps: 7}\n")
    cfg = load_config(str(f))
    assert cfg.learner.max_steps == 7 and cfg.preset == "my"
    again = replace(cfg, learner={"max_steps": 9})
    assert again.learner.max_steps == 9 and cfg.learner.max_steps == 7
    bad = tmp_path / "bad.yaml"
    bad.write_text("learner: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_feature_fingerprint_tracks_settings():
    a = load_config("demo").features
    b = load_config("demo", ["features.n_mels=40"]).features
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == load_config("base").features.fingerprint()


@pytest.mark.parametrize(
    "override, keys",
    [
        ("features.fmin=9000", ["features.fmin", "features.fmax"]),
        ("features.fmax=9000", ["features.fmax", "features.sample_rate"]),
        ("features.n_fft=16", ["features.n_fft", "features.win_ms"]),
        ("features.hop_ms=0.01", ["features.hop_ms"]),
        ("features.n_mels=300", ["features.n_mels", "features.n_fft"]),
    ],
)
def test_feature_settings_that_do_not_fit_together_are_refused_naming_the_keys(override, keys):
    with pytest.raises(ConfigError) as err:
        load_config("demo", [override])
    assert all(k in str(err.value) for k in keys), str(err.value)
    load_config("demo", ["features.fmin=300", "features.fmax=3400", "features.n_fft=400"])


def test_a_preset_extends_another_and_an_overlay_lays_over_it(tmp_path):
    from cluster.config import read_preset

    # small says only what differs from demo
    assert set(read_preset("small")) >= {"model", "learner"}
    assert "augment" not in yaml.safe_load((PRESET_DIR / "small.yaml").read_text())
    child = tmp_path / "child.yaml"
    child.write_text("extends: smoke\nlearner: {lr: 0.002}\n")
    cfg, smoke = load_config(str(child)), load_config("smoke")
    assert cfg.learner.lr == 0.002 and cfg.sampler == smoke.sampler
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"extends: {loop}\n")
    with pytest.raises(ConfigError, match="without a cycle"):
        load_config(str(loop))
    tuned = load_config("small", ["learner.lr=5e-5"], overlay="finetune")
    assert tuned.learner.lr == 5e-5 and tuned.learner.pretrain_steps == 50  # overrides last
    assert tuned.learner.max_minutes == 2 and tuned.model == load_config("small").model
    assert "finetune" not in preset_names()


def test_a_runs_config_says_whose_paths_it_holds(tmp_path):
    """config.yaml kept the training machine's absolute data path with no note of it."""
    import socket

    from cluster.runs import RunDir

    cfg = load_config("smoke", ["data.path=/corpora/vox1"])
    run = RunDir.create(tmp_path, cfg, "r1")
    text = run.config_file.read_text()
    assert text.startswith("# The config of run r1, written on " + socket.gethostname())
    assert "give --data" in text and "/corpora/vox1" in text
    assert run.read_config() == cfg  # the note is a comment: the config reads back the same
