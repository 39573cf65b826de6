"""The scoring library stands without TensorFlow: what NumPy-only tools may import."""

from __future__ import annotations

import subprocess
import sys


def test_the_scoring_library_imports_no_tensorflow():
    code = (
        "import sys\n"
        "import learner.scoring.scores, learner.scoring.trials, learner.scoring.windows\n"
        "import learner.scoring.embedding_files, learner.scoring.profiles\n"
        "import learner.scoring.baseline, learner.scoring.calibration\n"
        "import learner.scoring.pipeline, learner.scoring.unlabelled\n"
        "import learner.inference.domain\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'ray') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the scoring library imported {out.stdout.strip()}"
