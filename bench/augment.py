"""Augmentation cost, measured in one run on real speech (the shared set, else the fixture):

- per 4 s segment (base preset, 400 frames), one core: each stage (speed, reverberation,
  noise, channel, gain + SpecAugment) and the whole chain, next to the log-mel alone;
- batches per second (32 triplets x 400 frames) delivered by 1 and by 2 Ray producers with
  augmentation on (speech cache filled first).

python bench/augment.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.common import ROOT, SHARED_SPEECH, median, one_core, quiet_ray_env, report, timeit  # noqa: E402
from bench.producers import throughput  # noqa: E402
from cluster.config import load_config  # noqa: E402


def stage_costs(cfg, speech: np.ndarray) -> dict:
    """Milliseconds per segment of each stage and of the whole chain, fast and as it was
    (the time-domain reference: fresh coloured noise, overlap-add reverberation, the IIR
    channel and the gain on the waveform), on one core."""
    import scipy.signal

    from workers.augment import (
        Augmenter,
        add_noise,
        channel_gain,
        coloured_noise,
        random_channel,
        reverberate,
        rir_spectrum,
        speed_perturb,
    )
    from workers.features import LogMel

    logmel = LogMel(cfg.features)
    n = (cfg.sampler.frames - 1) * cfg.features.hop_length + cfg.features.win_length
    x = np.resize(speech, n).astype(np.float32)
    aug = Augmenter(cfg.augment, cfg.features, cache_dir=cfg.data.cache_dir)
    rng = np.random.default_rng(0)
    rir = aug.rirs[0]
    kept = rir_spectrum(rir, n)
    feats = logmel(x)

    def reference_reverb(x):
        h = rir[int(np.argmax(np.abs(rir))) :]
        y = scipy.signal.oaconvolve(x, h / (np.abs(h[0]) + 1e-9))[: len(x)]
        return (y * np.sqrt(np.mean(x * x) / (np.mean(y * y) + 1e-12))).astype(np.float32)

    def reference_chain():
        c = cfg.augment
        y = speed_perturb(np.resize(x, int(n * 1.1) + 1), 1.1, 16000)[:n]
        if rng.random() < c.reverb_prob:
            y = reference_reverb(y)
        if rng.random() < c.noise_prob:
            y = add_noise(y, coloured_noise(n, rng), float(rng.uniform(c.snr_low, c.snr_high)))
        if rng.random() < c.channel_prob:
            y = random_channel(y, rng, 16000).astype(np.float32)
        if rng.random() < 0.5:
            y = y * np.float32(10 ** (rng.uniform(-c.gain_db, c.gain_db) / 20))
        return aug.spec_mask(logmel(y), rng)

    def chain():
        y = speed_perturb(np.resize(x, int(n * 1.1) + 1), 1.1, 16000)[:n]
        return aug.spec_mask(aug.features(y, rng, logmel), rng)

    ms = {
        "logmel": lambda: logmel(x),
        "speed_1.1": lambda: speed_perturb(x, 1.1, 16000),
        "reverb_reference_overlap_add": lambda: reference_reverb(x),
        "reverb": lambda: reverberate(x, rir, kept),
        "noise_coloured_reference_fresh": lambda: add_noise(x, coloured_noise(n, rng), 10.0),
        "noise_coloured": lambda: add_noise(x, aug._coloured(n, rng), 10.0),
        "channel_reference_iir": lambda: random_channel(x, rng, 16000),
        "channel": lambda: channel_gain(rng, logmel.bin_freqs, 16000),
        "spec_mask": lambda: aug.spec_mask(feats, rng),
        "whole_chain_reference": reference_chain,
        "whole_chain": chain,
    }
    return {k: round(1000 * median(timeit(f, repeat=80, warmup=5)), 3) for k, f in ms.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=20.0)
    a = p.parse_args()
    quiet_ray_env()
    one_core()
    speech_root = SHARED_SPEECH if SHARED_SPEECH.exists() else ROOT / "tests" / "data" / "speech"
    with tempfile.TemporaryDirectory() as cache:
        os.environ["VE_CACHE_DIR"] = cache
        cfg = load_config(
            "base",
            [
                f"data.path={speech_root}",
                f"data.cache_dir={cache}",
                "producer.queue_size=8",
                "augment.enabled=true",
                "augment.speed_prob=0.3",
                "augment.reverb_prob=0.3",
                "augment.noise_prob=0.5",
                "augment.channel_prob=0.8",
                "augment.time_masks=1",
                "augment.freq_masks=1",
            ],
        )
        from workers.audio import load_audio
        from workers.rundata import RunData

        data = RunData.open(cfg.data, cfg.synthetic)
        costs = stage_costs(cfg, load_audio(data.db.abspath(0)))
        waves = data.waves(cfg.features)  # fill the speech cache, as a first pass would
        for i in range(len(data.db.utterances)):
            try:
                waves.get(i)
            except Exception:  # noqa: BLE001 - bad files are skipped by producers too
                pass
        import ray

        from cluster.ray_session import init_ray

        init_ray(num_cpus=2, quiet=False)
        one = throughput(cfg, 1, a.seconds, "aug-1")
        two = throughput(cfg, 2, a.seconds, "aug-2")
        ray.shutdown()
    segments = 3 * cfg.sampler.triplets  # per batch: anchors, positives, negatives
    per_core = 1000.0 / costs["whole_chain"]
    report(
        {
            "bench": "augment",
            "segment_frames": cfg.sampler.frames,
            "ms_per_segment": costs,
            "chain_over_logmel": round(costs["whole_chain"] / costs["logmel"], 2),
            "reference_chain_over_logmel": round(
                costs["whole_chain_reference"] / costs["logmel"], 2
            ),
            "speedup_over_reference": round(
                costs["whole_chain_reference"] / costs["whole_chain"], 2
            ),
            "segments_per_s_per_core": round(per_core, 1),
            "one_producer_batches_per_s": one["batches_per_s"],
            "two_producers_batches_per_s": two["batches_per_s"],
            "two_vs_one": round(two["batches_per_s"] / one["batches_per_s"], 2),
            # the producer cores a learner needs at 10 and 20 base steps/s: from the measured
            # producer (chain, crops, batch assembly), and from the chain alone
            "producers_for_10_steps_per_s": round(10 / one["batches_per_s"], 1),
            "producers_for_20_steps_per_s": round(20 / one["batches_per_s"], 1),
            "cores_for_10_steps_per_s_chain_only": round(10 * segments / per_core, 1),
            "cores_for_20_steps_per_s_chain_only": round(20 * segments / per_core, 1),
        }
    )


if __name__ == "__main__":
    main()
