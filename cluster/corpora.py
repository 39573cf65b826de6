"""The corpus names a config may use, defined once: ``data.layout`` and ``data.vctk_mic``
(validated in :mod:`cluster.config_builder`, recognised in :mod:`workers.layouts`).

    "voxceleb" in LAYOUTS          # True: data.layout=voxceleb is a valid setting
"""

# Layouts recognised by the corpora's own file names, at any depth.
NAMED_LAYOUTS = ("librispeech", "voxceleb", "cnceleb", "vctk")
# Every layout: the named ones, ``<speaker>/<utt>`` folders, Kaldi data folders, manifests.
LAYOUTS = (*NAMED_LAYOUTS, "flat", "kaldi", "manifest")
# VCTK 0.92 recorded each sentence with two microphones: one, the other or both.
VCTK_MICS = ("mic1", "mic2", "both")
