"""Print the Triton source of the Inductor kernels whose names contain a given text, from a
TORCH_LOGS=output_code log: python extract_kernel.py LOG TEXT [TEXT ...]"""
import re
import sys

text = open(sys.argv[1], errors="replace").read()
seen = set()
for key in sys.argv[2:]:
    for m in re.finditer(r"async_compile\.triton\('(triton_\w*" + re.escape(key) + r"\w*)', '''(.*?)'''", text, re.S):
        if m.group(1) not in seen:
            seen.add(m.group(1))
            print(f"# ===== {m.group(1)}\n{m.group(2)}\n")
