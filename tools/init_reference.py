#!/usr/bin/env python3
"""init_reference.py - the gpt-init generator re-implemented from its definition
(gpt-weights(5), lib/init.h) in plain Python, to check that the definition is
complete and that lib/init.c follows it bit for bit.

    python3 tools/init_reference.py                  # print pinned values (seed 0)
    python3 tools/init_reference.py FILE [N]         # compare N random elements
                                                     # of every random tensor of
                                                     # a gpt-init file (default 2000)

Python floats are IEEE doubles and Python never fuses a multiply-add, so the
arithmetic below is the definition's arithmetic. Needs nothing beyond the
standard library.
"""
import math, struct, sys

M32 = 0xffffffff
def philox(ctr, key):
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(10):
        if r:
            k0 = (k0 + 0x9E3779B9) & M32
            k1 = (k1 + 0xBB67AE85) & M32
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ c3 ^ k1) & M32, p0 & M32
    return c0, c1, c2, c3

def fnv(s):
    h = 0xcbf29ce484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h

SQRT2 = 1.4142135623730951
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
HALF_PI = 1.5707963267948966

def ln(x):
    b = struct.unpack('<Q', struct.pack('<d', x))[0]
    e = ((b >> 52) & 0x7ff) - 1023
    m = struct.unpack('<d', struct.pack('<Q', (b & 0x000fffffffffffff) | 0x3ff0000000000000))[0]
    if m > SQRT2:
        m *= 0.5; e += 1
    s = (m - 1.0) / (m + 1.0); z = s * s
    p = 1.0 / 23.0
    for d in (21, 19, 17, 15, 13, 11, 9, 7, 5, 3):
        p = p * z + 1.0 / d
    p = p * z + 1.0
    de = float(e)
    return de * LN2_HI + (de * LN2_LO + 2.0 * s * p)

def sincos_small(a):
    z = a * a
    ps = -1.0 / 355687428096000.0
    for c in (1.0/1307674368000.0, -1.0/6227020800.0, 1.0/39916800.0, -1.0/362880.0, 1.0/5040.0, -1.0/120.0, 1.0/6.0):
        ps = ps * z + c
    s = a - a * z * ps
    pc = 1.0 / 20922789888000.0
    for c in (-1.0/87178291200.0, 1.0/479001600.0, -1.0/3628800.0, 1.0/40320.0, -1.0/720.0, 1.0/24.0, -1.0/2.0):
        pc = pc * z + c
    return s, 1.0 + z * pc

def sincos2pi(t):
    q4 = t * 4.0; q = int(q4); f = q4 - q
    if f > 0.5:
        ca, sa = sincos_small((1.0 - f) * HALF_PI)
    else:
        sa, ca = sincos_small(f * HALF_PI)
    return [(sa, ca), (ca, -sa), (-sa, -ca), (-ca, sa)][q]

def f32(x):
    return struct.unpack('<f', struct.pack('<f', x))[0]

def block(seed, h, j):
    return philox((j & M32, j >> 32, h & M32, h >> 32), (seed & M32, seed >> 32))

def normal(seed, name, i):
    x = block(seed, fnv(name), i >> 1)
    u1 = (((x[0] << 21) | (x[1] >> 11)) + 1) * 2.0**-53
    t = ((x[2] << 21) | (x[3] >> 11)) * 2.0**-53
    r = math.sqrt(-2.0 * ln(u1))
    s, c = sincos2pi(t)
    return f32(r * c) if i % 2 == 0 else f32(r * s)

def uniform(seed, name, i, fan_in):
    b = 1.0 / math.sqrt(fan_in)
    w = block(seed, fnv(name), i >> 2)[i & 3]
    return f32(((w + 0.5) * 2.0**-31 - 1.0) * b)

def bf16(x):
    u = struct.unpack('<I', struct.pack('<f', x))[0]
    u = (u + 0x7fff + ((u >> 16) & 1)) >> 16
    return struct.unpack('<f', struct.pack('<I', u << 16))[0]

def compare(path, count):
    import json, random
    d = open(path, 'rb').read()
    n = struct.unpack('<Q', d[:8])[0]
    h = json.loads(d[8:8 + n])
    meta = h.pop('__metadata__', {})
    seed = int(meta.get('init_seed', '0'))
    base = 8 + n
    rnd = random.Random(1)
    bad = total = 0
    for name, info in h.items():
        shape = info['shape']
        numel = 1
        for x in shape:
            numel *= x
        o = info['data_offsets'][0]
        short = name.split('.')
        if name == 'embed.weight' or name.startswith('value_embeds.'):
            kind = 'normal'
        elif len(short) >= 2 and short[-2] in ('c_q', 'c_k', 'c_v', 'c_fc'):
            kind = 'uniform'
        else:
            continue
        for _ in range(count):
            i = rnd.randrange(numel)
            if info['dtype'] == 'BF16':
                u = struct.unpack('<H', d[base + o + 2 * i:base + o + 2 * i + 2])[0]
                got = struct.unpack('<f', struct.pack('<I', u << 16))[0]
            else:
                got = struct.unpack('<f', d[base + o + 4 * i:base + o + 4 * i + 4])[0]
            want = bf16(normal(seed, name, i)) if kind == 'normal' else uniform(seed, name, i, shape[1])
            total += 1
            if got != want:
                bad += 1
                if bad <= 5:
                    print('%s[%d]: file %r, definition %r' % (name, i, got, want))
    print('%d elements compared, %d differ' % (total, bad))
    return bad == 0


if __name__ == '__main__':
    if len(sys.argv) > 1:
        sys.exit(0 if compare(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000) else 1)
    print('philox4x32-10 of zeros:', ' '.join('%08x' % w for w in philox((0, 0, 0, 0), (0, 0))))
    for i in range(4):
        z = normal(0, 'embed.weight', i)
        print('embed.weight[%d] = %s (bf16 %r)' % (i, z.hex(), bf16(z)))
    for i in range(4):
        print('blocks.0.attn.c_q.weight[%d] = %s' % (i, uniform(0, 'blocks.0.attn.c_q.weight', i, 768).hex()))
