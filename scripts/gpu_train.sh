#!/bin/bash
# One lent GPU session (the device tool; 15 minutes in all): train several candidates side by side on
# the one GPU from an audio pack, and bring back each one's weights, card and log.
#
#   here:  python -m asr_core.onthefly pack .gpu/pack && tar czf .gpu/pack.tgz -C .gpu/pack . && rm -r .gpu/pack
#          (+ wheels the GPU image lacks in .gpu/whl: soundfile cffi pycparser jiwer rapidfuzz, for Python 3.12)
#   there: MINUTES=7 bash scripts/gpu_train.sh      (writes $OUT/*.tar)
# Candidates are judged afterwards, here, on the full speechocean762 test set (python -m asr_core.evaluate).
set -u
OUT=${OUT:-/tmp/gpu_out}; MIN=${MINUTES:-7}; W=/tmp/gpu
mkdir -p "$OUT" $W/pack $W/out $W/ck
if ls .gpu/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
{ nvidia-smi; python3 -c "import torch, torchaudio; print(torch.__version__, torchaudio.__version__, torch.cuda.is_available())"; nproc; } > $W/env.txt 2>&1
tar xzf .gpu/pack.tgz -C $W/pack && python3 -m asr_core.onthefly decode $W/pack $W/audio.safetensors >> $W/env.txt 2>&1
# MPS lets the candidates' kernels share the GPU at the same time; without it they take turns
if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d 2>>$W/env.txt; then
  timeout 60 python3 -c "import torch; torch.ones(1).cuda(); print('MPS on')" >> $W/env.txt 2>&1 || { echo quit | nvidia-cuda-mps-control; echo "MPS off" >> $W/env.txt; }
fi
printf '{"arch": {"hidden_size": 256}}' > $W/gru256.json
run() {
  name=$1; shift
  timeout $((${MIN%.*} * 60 + 90)) python3 -m asr_core.train --audio $W/audio.safetensors --name "$name" \
    --max-minutes "$MIN" --epochs 100000 --checkpoint-minutes 1 --threads 2 --batch-frames 32000 \
    --out-dir $W/out --ckpt-dir $W/ck "$@" > $W/"$name".log 2>&1
}
run lstm_ft  --model lstm --init-from lstm --lr 1e-3 --warmup 100 &
run lstm_new --model lstm --lr 3e-3 --warmup 500 &
run gru_ft   --model gru --init-from gru --lr 1e-3 --warmup 100 &
run gru256   --model gru --config $W/gru256.json --lr 3e-3 --warmup 500 &
run rnn_ft   --model rnn --init-from rnn --lr 5e-4 --warmup 100 --clip 1 &
run rnn_new  --model rnn --lr 1e-3 --warmup 500 --clip 1 &
wait
nvidia-smi >> $W/env.txt 2>&1
for n in lstm_ft lstm_new gru_ft gru256 rnn_ft rnn_new; do
  tar cf "$OUT/$n.tar" -C $W/out $(cd $W/out && ls "$n".* 2>/dev/null) -C $W "$n.log"
done
tar cf "$OUT/logs.tar" -C $W env.txt $(cd $W && ls *.log)
ls -la "$OUT"; tail -n 3 $W/*.log
