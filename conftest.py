"""Test settings shared by the unit tests and the notebooks that nbval runs.

Set here, before any kernel starts, so the notebooks inherit them: the tiny
profile, no hub access, and kdutils importable.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent

os.environ["KDSD_PROFILE"] = "tiny"
for offline in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[offline] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
