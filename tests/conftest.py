"""Settings of the whole test suite."""

import os

# ``auto`` precision resolves to fp32 on every machine the suite runs on (extract.accel.bf16_native), so
# results do not depend on whether the CPU has AVX-512 BF16 / AMX; precision tests set this themselves.
os.environ["VQA_CPU_BF16"] = "0"
