"""Write the synthetic patients table: python data/generate_patients.py [ROWS] [SEED].

The generator itself is iae_privacy.samples.synthetic_patients (also `iae-privacy generate-patients`).
"""

import sys
from pathlib import Path

from iae_privacy.samples import write_synthetic_patients

if __name__ == "__main__":
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    print(write_synthetic_patients(Path(__file__).parent / "patients.parquet", rows, seed))
