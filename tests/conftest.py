import sys
from pathlib import Path

# make tests/ helpers (role_docs, the probe) importable from the tests
sys.path.insert(0, str(Path(__file__).resolve().parent))
