#!/bin/bash
# One lent GPU session (the device tool; 15 minutes in all): train several candidates side by side on
# the one GPU from an audio pack, and bring back each one's weights, card and log.
#
#   here:  python -m asr_core.onthefly pack .gpu/pack && tar czf .gpu/pack.tgz -C .gpu/pack . && rm -r .gpu/pack
#          (--eval-count 50 leaves room in the 64 MiB for a 3-layer teacher as float16)
#          (+ wheels the GPU image lacks in .gpu/whl: soundfile cffi pycparser jiwer rapidfuzz, for Python 3.12;
#           + teachers that are not shipped, NAME.safetensors with NAME.json, in .gpu/teachers)
#   there: MINUTES=7 ROUND=scripts/gpu/round1.txt bash scripts/gpu_train.sh      (writes $OUT/*.tar)
# ROUND lists the candidates, one per line: a name, then its asr_core.train options. Weights over 14 MB
# come back as float16 (a file from the device may hold 16 MiB); load_state_dict widens them again.
# Candidates are judged afterwards, here, on the full speechocean762 test set (python -m asr_core.evaluate).
set -u
OUT=${OUT:-/tmp/gpu_out}; MIN=${MINUTES:-7}; ROUND=${ROUND:-scripts/gpu/round1.txt}; PACK=${PACK:-.gpu/pack.tgz}
W=/tmp/gpu
mkdir -p "$OUT" $W/pack $W/out $W/ck
if ls .gpu/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
{ nvidia-smi; python3 -c "import torch, torchaudio; print(torch.__version__, torchaudio.__version__, torch.cuda.is_available())"; nproc; } > $W/env.txt 2>&1
date >> $W/env.txt
tar xzf "$PACK" -C $W/pack && python3 -m asr_core.onthefly decode $W/pack $W/audio.safetensors >> $W/env.txt 2>&1
date >> $W/env.txt
# MPS lets the candidates' kernels share the GPU at the same time; without it they take turns
if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d 2>>$W/env.txt; then
  timeout 60 python3 -c "import torch; torch.ones(1).cuda(); print('MPS on')" >> $W/env.txt 2>&1 || { echo quit | nvidia-cuda-mps-control; echo "MPS off" >> $W/env.txt; }
fi
names=()
while read -r name opts; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  names+=("$name")
  # shellcheck disable=SC2086  # the options are words
  timeout "$(python3 -c "print(int($MIN * 60 + 120))")" python3 -m asr_core.train --audio $W/audio.safetensors \
    --name "$name" --max-minutes "$MIN" --epochs 100000 --checkpoint-minutes 1 --threads 2 --batch-frames 32000 \
    --out-dir $W/out --ckpt-dir $W/ck $opts > $W/"$name".log 2>&1 &
done < "$ROUND"
wait
nvidia-smi >> $W/env.txt 2>&1
python3 - $W/out <<'PY'
import json, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
for f in Path(sys.argv[1]).glob("*.safetensors"):
    if f.stat().st_size > 14e6:
        save_file({k: v.half() for k, v in load_file(f).items()}, f)
        card = f.with_suffix(".json")
        c = json.loads(card.read_text()); c["returned_as"] = "float16 (the device hands back files of 16 MiB at most)"
        card.write_text(json.dumps(c, indent=1))
PY
for n in "${names[@]}"; do
  tar cf "$OUT/$n.tar" -C $W/out $(cd $W/out && ls "$n".* 2>/dev/null) -C $W "$n.log"
done
tar cf "$OUT/logs.tar" -C $W env.txt $(cd $W && ls *.log)
ls -la "$OUT"; tail -n 2 $W/*.log
