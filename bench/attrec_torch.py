#!/usr/bin/python3
"""Time a code-faithful PyTorch port of the authors' AttRec (DeepRec AttRec.py as it runs: ATTREC_SPEC.md sections
2-5) on the authors' ML-100k split, for a side-by-side comparison with `seqrec train --model attrec` on the same
machine (PyTorch 1 thread, float32).

What it ports: the ids mapped by first appearance in train.dat (+1 for items, 1683 item rows, 943 users); windows
of 5 inputs + 3 targets from every contiguous stretch of 8 (92,456 on ML-100k); each epoch a fresh permutation,
92 batches of 1000 (remainder dropped) and 3 negatives per window re-drawn uniformly from {1..N-1} minus its
targets; the model: Q[seq] + concatenated sin/cos time signal, one shared ReLU projection for query and key (no
bias; computed once, which only helps the port), softmax over keys, diagonal zeroed after it, value = raw
embeddings, mean over the rows; y = 0.2 |P_u - X_j|^2 + 0.8 |m - Q_j|^2; hinge with margin 0.5 summed over the
batch (pairs k <-> k) + 0.01 l2(W) + 0.001 (l2(P) + l2(V) + l2(X) + l2(Q)) over whole tables; Adagrad lr 0.05,
initial accumulator 0.05. Evaluation as SeqRecMetrics.evaluate1: per user, the scores of every item the user has
not trained on, a stable sort, HR@50, MRR and AUC.

  /usr/bin/python3 bench/attrec_torch.py [SPLIT_DIR] [EPOCHS]

BLAS: Debian's python3-torch calls the system libblas.so.3, which on a fresh machine is the netlib reference
implementation (~5 GFLOP/s here, making the port ~5x slower than the issue's reference figure). Run it with
OpenBLAS, without changing the system's default: `apt-get download libopenblas0-pthread && dpkg -x
libopenblas0-pthread_*.deb /tmp/oblas`, then `LD_LIBRARY_PATH=/tmp/oblas/usr/lib/x86_64-linux-gnu/openblas-pthread
OPENBLAS_NUM_THREADS=1` before the command (or `apt-get install libopenblas0-pthread`). The JSON reports the
measured matmul rate (`blas_gflops`, 512^3) so a slow BLAS is visible.

Prints one line per epoch and, last, one JSON object: train seconds per epoch (all, median of epochs 2..), the
evaluation seconds and the metrics after the last epoch.
"""
import json, math, os, statistics, sys, time
import numpy as np
import torch

torch.set_num_threads(1)
here = os.path.dirname(os.path.abspath(__file__))
split = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, '..', '..', 'shared', 'data', 'ml-100k', 'attrec-split')
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
L, T, D, B = 5, 3, 150, 1000
ALPHA, MARGIN, REG_W, REG_EMB = 0.2, 0.5, 0.01, 0.001

# ---------------------------------------------------------------- data (load_data_seq.py DataSet)
def read(path):
    rows = [line.split('\t') for line in open(path) if line.strip()]
    return [(int(r[0]), int(r[1])) for r in rows]

train, test = read(os.path.join(split, 'train.dat')), read(os.path.join(split, 'test.dat'))
user_map, item_map = {}, {}
for u, i in train:
    user_map.setdefault(u, len(user_map))
    item_map.setdefault(i, len(item_map) + 1)
num_user = max(len(user_map), 943)
num_item = max(len(item_map), 1682) + 1
seqs = [[] for _ in range(num_user)]
for u, i in train:
    seqs[user_map[u]].append(item_map[i])
test_item = {user_map[u]: item_map.get(i, num_item - 1) for u, i in test if u in user_map}

users, inputs, targets = [], [], []
for u, s in enumerate(seqs):
    for e in range(len(s), L + T - 1, -1):  # windows of L + T from the end backwards, step 1
        users.append(u)
        inputs.append(s[e - L - T:e - T])
        targets.append(s[e - T:e])
users, inputs, targets = torch.tensor(users), torch.tensor(inputs), torch.tensor(targets)
n = len(users)

# ---------------------------------------------------------------- model
def timing_signal(length, channels):
    k = channels // 2
    inc = math.log(1e4 / 1.0) / max(k - 1, 1)
    inv = torch.exp(torch.arange(k, dtype=torch.float64) * -inc)
    x = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    ts = torch.cat([torch.sin(x), torch.cos(x)], 1)
    if channels % 2:
        ts = torch.cat([ts, torch.zeros(length, 1, dtype=torch.float64)], 1)
    return ts.float()

def trunc(rows):  # tf.truncated_normal(stddev=0.001): cut at 2 sigma
    return torch.nn.Parameter(torch.nn.init.trunc_normal_(torch.empty(rows, D), std=0.001, a=-0.002, b=0.002))

torch.manual_seed(42)
P, V, Q, X = trunc(num_user), trunc(num_user), trunc(num_item), trunc(num_item)
W = torch.nn.Parameter(torch.empty(D, D).uniform_(-math.sqrt(6 / (2 * D)), math.sqrt(6 / (2 * D))))
TS = timing_signal(L, D)
eye = torch.eye(L)
opt = torch.optim.Adagrad([P, V, Q, X, W], lr=0.05, initial_accumulator_value=0.05)

def short_term(seq):
    E = Q[seq]                                        # [B, L, D]
    qk = torch.relu((E + TS) @ W)                     # query = key (one shared kernel, same input)
    S = torch.softmax(qk @ qk.transpose(1, 2) / math.sqrt(D), -1) * (1 - eye)
    return (S @ E).mean(1)                            # [B, D]

def distance(u, m, items):                           # items [B, K] -> y [B, K]
    return ALPHA * ((P[u][:, None] - X[items]) ** 2).sum(-1) + (1 - ALPHA) * ((m[:, None] - Q[items]) ** 2).sum(-1)

def l2(z):
    return (z ** 2).sum() / 2

def negatives(tg):
    neg = torch.randint(1, num_item, tg.shape)
    while True:  # uniform over {1..N-1} minus the window's targets
        bad = (neg[:, :, None] == tg[:, None, :]).any(-1)
        if not bad.any():
            return neg
        neg[bad] = torch.randint(1, num_item, (int(bad.sum()),))

# ---------------------------------------------------------------- evaluation (SeqRecMetrics.evaluate1)
seen = [set(s) for s in seqs]
all_items = list(range(1, num_item))
def evaluate():
    hits, rr, auc, count = 0, 0.0, 0.0, 0
    with torch.no_grad():
        for u in range(num_user):
            if u not in test_item:
                continue
            cands = [i for i in all_items if i not in seen[u]]
            m = short_term(torch.tensor([seqs[u][-L:]]))
            y = distance(torch.tensor([u]), m, torch.tensor([cands]))[0]
            order = sorted(range(len(cands)), key=lambda k: float(y[k]))  # stable: ties keep candidate order
            rank = next(r for r, k in enumerate(order) if cands[k] == test_item[u])
            hits += rank < 50
            rr += 1 / (rank + 1)
            auc += (len(cands) - 1 - rank) / (len(cands) - 1)
            count += 1
    return {'HR@50': hits / count, 'MRR': rr / count, 'AUC': auc / count}

def blas_gflops():
    x, y = torch.randn(512, 512), torch.randn(512, 512)
    x @ y
    t = time.perf_counter()
    for _ in range(5):
        x @ y
    return 5 * 2 * 512 ** 3 / (time.perf_counter() - t) / 1e9

gflops = blas_gflops()
if gflops < 20:
    print(f'warning: matmul at {gflops:.1f} GFLOP/s: the reference BLAS? (see the header: run with OpenBLAS)', file=sys.stderr)
train_s = []
for epoch in range(epochs):
    t0 = time.perf_counter()
    perm = torch.randperm(n)
    neg = negatives(targets)
    total = 0.0
    for b in range(n // B):
        idx = perm[b * B:(b + 1) * B]
        u = users[idx]
        m = short_term(inputs[idx])
        y = distance(u, m, torch.cat([targets[idx], neg[idx]], 1))
        loss = torch.relu(y[:, :T] - y[:, T:] + MARGIN).sum() + REG_W * l2(W) + REG_EMB * (l2(P) + l2(V) + l2(X) + l2(Q))
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss)
    train_s.append(time.perf_counter() - t0)
    print(f'epoch {epoch + 1}: loss {total:.3f}, train {train_s[-1]:.2f} s ({n // B} batches of {B})', file=sys.stderr)
t0 = time.perf_counter()
metrics = evaluate()
eval_s = time.perf_counter() - t0
print(json.dumps({'peer': 'pytorch-attrec', 'torch': torch.__version__, 'threads': torch.get_num_threads(), 'blas_gflops': round(gflops, 1), 'windows': n,
                  'train_s': [round(x, 3) for x in train_s], 'train_s_median': round(statistics.median(train_s[1:] or train_s), 3),
                  'eval_s': round(eval_s, 3), 'metrics': metrics}))
