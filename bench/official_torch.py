#!/usr/bin/python3
"""Time the official S3-Rec fine-tuning step and evaluation batch in PyTorch (1 thread, float32) on Beauty-shaped
batches, for a side-by-side comparison with `seqrec finetune` on the same machine.

The model is the re-implementation of the official models.py/modules.py in test/fixtures/s3rec/gen_s3rec_fixtures.py
(checked against this project by test/s3rec_parity.test.ts), at the official size (hidden 64, 2 layers, 2 heads,
L 50, dropout 0.5) and with the official batch layout (left-padded [256, 50], trainers.FinetuneTrainer: BCE with
one negative, Adam). Batches are the real Beauty sequences (../shared/data/s3rec/Beauty.txt). Prints the median
ms of a training step and of an evaluation batch (100 candidates) and the implied epoch times (88 batches each).

  /usr/bin/python3 bench/official_torch.py [DATA_DIR] [STEPS]
"""
import importlib.util, os, statistics, sys, time
import torch

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location('gen', os.path.join(here, '..', 'test', 'fixtures', 's3rec', 'gen_s3rec_fixtures.py'))
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)

torch.set_num_threads(1)
torch.set_default_dtype(torch.float32)
data_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, '..', '..', 'shared', 'data', 's3rec')
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 12
seqs = [[int(x) for x in line.split()[1:]] for line in open(os.path.join(data_dir, 'Beauty.txt'))]
max_item = max(max(s) for s in seqs)

a = gen.Args()
a.hidden_size, a.num_hidden_layers, a.num_attention_heads, a.max_seq_length = 64, 2, 2, 50
a.hidden_dropout_prob = a.attention_probs_dropout_prob = 0.5
a.item_size, a.mask_id, a.attribute_size = max_item + 2, max_item + 1, 638
gen.INTERMEDIATE = 256
model = gen.S3RecModel(a)
model.float()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
L, B = 50, 256
rnd = torch.Generator().manual_seed(0)

def pad(x):
    x = x[-L:]
    return [0] * (L - len(x)) + x

def batch(i):
    users = seqs[(i * B) % len(seqs):][:B]
    inp = torch.tensor([pad(s[:-3]) for s in users])
    pos = torch.tensor([pad(s[1:-2]) for s in users])
    neg = torch.randint(1, a.item_size, pos.shape, generator=rnd) * (pos > 0)
    ev = torch.tensor([pad(s[:-2]) for s in users])
    cand = torch.randint(1, a.item_size, (len(users), 100), generator=rnd)
    return inp, pos, neg, ev, cand

train_ms, eval_ms = [], []
for i in range(steps):
    inp, pos, neg, ev, cand = batch(i + 7)
    model.train()
    t0 = time.perf_counter()
    out = model.finetune(inp)
    loss, _, _ = gen.finetune_loss(model, out, pos, neg)
    opt.zero_grad()
    loss.backward()
    opt.step()
    train_ms.append(1000 * (time.perf_counter() - t0))
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        h = model.finetune(ev)[:, -1, :]
        scores = torch.bmm(model.item_embeddings(cand), h.unsqueeze(-1)).squeeze(-1).numpy()
    eval_ms.append(1000 * (time.perf_counter() - t0))
tr, ev = statistics.median(train_ms[2:]), statistics.median(eval_ms[2:])
print(f'pytorch {torch.__version__}, 1 thread: train step {tr:.1f} ms (epoch of 88: {88 * tr / 1000:.1f} s), eval batch {ev:.1f} ms (pass of 88: {88 * ev / 1000:.1f} s)')
