"""Bitwise comparison of norm_reductions_reference.cc against PaddlePaddle 3.3.1 CPU.

Usage: python docs/research/norm_reductions_check.py [--quick] [--threads N]
Builds libreduce.so from norm_reductions_reference.cc (g++ -O2 -ffp-contract=off) if needed.
"""
import argparse, ctypes, os, subprocess, sys, time
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument('--quick', action='store_true')
ap.add_argument('--threads', type=int, default=0, help='paddle.base.core.set_num_threads(N) if >0')
ap.add_argument('--seed', type=int, default=12345)
args = ap.parse_args()

HERE = os.path.dirname(os.path.abspath(__file__))
SO = os.path.join(HERE, 'libreduce.so')
SRC = os.path.join(HERE, 'norm_reductions_reference.cc')
if not os.path.exists(SO) or os.path.getmtime(SO) < os.path.getmtime(SRC):
    subprocess.check_call(['g++', '-O2', '-ffp-contract=off', '-shared', '-fPIC', SRC, '-o', SO])

import paddle  # noqa: E402
paddle.set_device('cpu')
if args.threads > 0:
    paddle.base.core.set_num_threads(args.threads)

L = ctypes.CDLL(SO)
I64, P = ctypes.c_int64, ctypes.c_void_p
for name, rt in [('paddle_squared_l2_norm_f32', ctypes.c_float), ('paddle_sum_f32', ctypes.c_float),
                 ('paddle_squared_l2_norm_f64', ctypes.c_double), ('paddle_sum_f64', ctypes.c_double)]:
    f = getattr(L, name); f.restype = rt; f.argtypes = [P, I64]
L.paddle_global_sumsq.restype = ctypes.c_double
L.paddle_global_sumsq.argtypes = [P, I64, P, I64]
L.paddle_global_clip_factor_f32.restype = ctypes.c_float
L.paddle_global_clip_factor_f32.argtypes = [ctypes.c_float, ctypes.c_float]
L.paddle_global_clip_factor_f64.restype = ctypes.c_double
L.paddle_global_clip_factor_f64.argtypes = [ctypes.c_double, ctypes.c_double]
L.paddle_clip_by_norm_f32.restype = ctypes.c_float
L.paddle_clip_by_norm_f32.argtypes = [P, I64, ctypes.c_float, P]

rng = np.random.default_rng(args.seed)


def same(a, b, dt):
    return np.asarray(a, dt).tobytes() == np.asarray(b, dt).tobytes()


def gen(n, dt):
    """mixed magnitudes: N(0,1) * 10**U(-3,3) per element, or one scale per tensor."""
    mode = rng.integers(3)
    z = rng.standard_normal(n)
    if mode == 0:
        x = z * 10.0 ** rng.uniform(-3, 3, n)
    elif mode == 1:
        x = z * 10.0 ** rng.uniform(-3, 3)
    else:
        x = z
    return np.ascontiguousarray(x.astype(dt))


def lengths():
    s = set(range(0, 71))
    for p in range(1, 23):
        s |= {2 ** p - 1, 2 ** p, 2 ** p + 1}
    s |= {1023, 1024, 1025, 4095, 4096, 4097, 8191, 8192, 8193, 16383, 16384, 16385,
          32767, 32768, 32769, 65535, 65536, 65537, 262143, 262144, 262145, 1000003, 4000000}
    if not args.quick:
        s |= set(int(v) for v in rng.integers(71, 20000, 60))
        s |= set(int(v) for v in rng.integers(20000, 3000000, 15))
    return sorted(s)


results = {}
fails = {}


def rec(key, ok, example=None):
    r = results.setdefault(key, [0, 0])
    r[0 if ok else 1] += 1
    if not ok and key not in fails:
        fails[key] = example


t0 = time.time()
# ---------------- 1. squared_l2_norm ----------------
for n in lengths():
    reps = 3 if n <= 70 else 1
    for dt, tag in [(np.float32, 'f32'), (np.float64, 'f64')]:
        for _ in range(reps):
            x = gen(n, dt)
            ref = paddle._C_ops.squared_l2_norm(paddle.to_tensor(x)).numpy().reshape(-1)[0]
            got = getattr(L, 'paddle_squared_l2_norm_' + tag)(x.ctypes.data, n)
            rec('squared_l2_norm ' + tag, same(ref, got, dt), (n, repr(ref), repr(got)))
print('squared_l2_norm done %.1fs' % (time.time() - t0), flush=True)

# ---------------- 2. paddle.sum(paddle.stack(list)) ----------------
ks = set(range(1, 71)) | {127, 128, 129, 255, 256, 257, 1023, 1024, 1025, 2047, 2048, 2049,
                          4095, 4096, 4097, 8191, 8192, 8193, 16383, 16384, 16385, 32769,
                          65535, 65536, 65537, 99999, 100000}
if not args.quick:
    ks |= set(int(v) for v in rng.integers(71, 100001, 40))
for k in sorted(ks):
    for dt, tag in [(np.float32, 'f32'), (np.float64, 'f64')]:
        # partial sums = squared norms: positive, widely ranging magnitudes
        parts = (rng.standard_normal(k) ** 2 * 10.0 ** rng.uniform(-6, 6, k)).astype(dt)
        if k <= 3000 or k in (65536, 100000):
            # the real path: list of [1]-shaped squared_l2_norm-like tensors, stacked
            lst = [paddle.to_tensor(parts[i:i + 1]) for i in range(k)]
            ref = paddle.stack(lst).sum().numpy()
        else:
            # same kernel: stack output is a [k,1] tensor, reduce_all sum
            ref = paddle.sum(paddle.to_tensor(parts.reshape(k, 1))).numpy()
        got = getattr(L, 'paddle_sum_' + tag)(parts.ctypes.data, k)
        rec('sum(stack) ' + tag, same(ref, got, dt), (k, repr(ref), repr(got)))
        if k <= 70:  # 0-d tensors stacked
            lst = [paddle.to_tensor(parts[i]) for i in range(k)]
            ref = paddle.sum(paddle.stack(lst)).numpy()
            rec('sum(stack 0-d) ' + tag, same(ref, got, dt), (k, repr(ref), repr(got)))
print('sum(stack) done %.1fs' % (time.time() - t0), flush=True)

# ---------------- 2b. end-to-end ClipGradByGlobalNorm ----------------
n_e2e = 10 if args.quick else 40
for t in range(n_e2e):
    nt = int(rng.integers(1, 30))
    kinds = rng.integers(3)  # 0: all f32, 1: all f64, 2: mixed
    grads = []
    for i in range(nt):
        dt = np.float32 if kinds == 0 else np.float64 if kinds == 1 else (np.float32 if rng.integers(2) else np.float64)
        n = int(rng.choice([1, 7, 64, 1000, 9001, 70000, 300000]))
        grads.append(gen(n, dt))
    clip_norm = float(10.0 ** rng.uniform(-2, 3))
    pg = []
    for g in grads:
        p = paddle.create_parameter([len(g)], dtype=str(g.dtype))
        pg.append((p, paddle.to_tensor(g)))
    out = paddle.nn.ClipGradByGlobalNorm(clip_norm)(pg)
    p32 = np.array([L.paddle_squared_l2_norm_f32(g.ctypes.data, len(g)) for g in grads if g.dtype == np.float32], np.float32)
    p64 = np.array([L.paddle_squared_l2_norm_f64(g.ctypes.data, len(g)) for g in grads if g.dtype == np.float64], np.float64)
    gs = L.paddle_global_sumsq(p32.ctypes.data, len(p32), p64.ctypes.data, len(p64))
    if len(p64) > 0:
        fac64 = L.paddle_global_clip_factor_f64(gs, clip_norm)
    else:
        fac32 = L.paddle_global_clip_factor_f32(np.float32(gs), clip_norm)
    ok = True
    for g, (_, og) in zip(grads, out):
        if len(p64) > 0:
            fac = np.float64(fac64).astype(g.dtype)
        else:
            fac = np.float32(fac32)
        mine = g * fac
        ok &= mine.tobytes() == og.numpy().tobytes()
    rec('ClipGradByGlobalNorm e2e (grads bitwise)', ok, (nt, kinds, clip_norm))
print('global e2e done %.1fs' % (time.time() - t0), flush=True)

# ---------------- 3. clip_by_norm / ClipGradByNorm, float32 ----------------
cn_lens = list(range(0, 71)) + [127, 128, 129, 1023, 1024, 1025, 8191, 8192, 8193, 16385, 65537, 262145, 1000003]
if not args.quick:
    cn_lens += [int(v) for v in rng.integers(71, 300000, 30)]
for n in cn_lens:
    x = gen(n, np.float32)
    sq = float(L.paddle_squared_l2_norm_f32(x.ctypes.data, n))
    for max_norm in [np.sqrt(sq) * 0.5 if sq > 0 else 1.0, np.sqrt(sq) * 2.0 if sq > 0 else 1.0,
                     float(np.float32(np.sqrt(np.float32(sq)))), float(10.0 ** rng.uniform(-3, 3))]:
        max_norm = float(np.float32(max_norm))
        if not max_norm > 0:
            max_norm = 1.0
        try:
            ref = paddle._C_ops.clip_by_norm(paddle.to_tensor(x), max_norm).numpy()
        except Exception as e:  # e.g. n == 0
            print('paddle clip_by_norm error n=%d: %s' % (n, str(e).splitlines()[0][:100]))
            break
        mine = np.empty_like(x)
        L.paddle_clip_by_norm_f32(x.ctypes.data, n, max_norm, mine.ctypes.data)
        rec('clip_by_norm f32', ref.tobytes() == mine.tobytes(), (n, max_norm))
    # the nn.ClipGradByNorm wrapper
    if n > 0:
        p = paddle.create_parameter([n], dtype='float32')
        mn = float(np.float32(10.0 ** rng.uniform(-2, 2)))
        og = paddle.nn.ClipGradByNorm(mn)([(p, paddle.to_tensor(x))])[0][1].numpy()
        mine = np.empty_like(x)
        L.paddle_clip_by_norm_f32(x.ctypes.data, n, mn, mine.ctypes.data)
        rec('ClipGradByNorm f32 (wrapper)', og.tobytes() == mine.tobytes(), (n, mn))
print('clip_by_norm done %.1fs' % (time.time() - t0), flush=True)

print('\n%-45s %8s %8s' % ('function / dtype', 'match', 'mismatch'))
for k, (a, b) in results.items():
    print('%-45s %8d %8d' % (k, a, b))
for k, ex in fails.items():
    print('FIRST FAILURE', k, ex)
print('ALL MATCH' if not fails else 'MISMATCHES PRESENT')
