// Shape ops: permute / transpose, slice, concat, indexSelect / gatherRows, gather — forward, backward and the
// reference gradcheck on odd sizes, plus exact copies of integer tensors and the error messages.
import { expect, it } from 'vitest';
import { ref, sync, Tensor } from '../engine/index.js';
import * as S from '../kernels/shape.js';
import { checkOp, describeGpu, type F64 } from './harness.js';

const idxF64 = (values: number[], shape = [values.length]): F64 => ({ data: Float64Array.from(values), shape });

describeGpu('shape', () => {
  const PERMS: Array<[number[], number[]]> = [
    [[1], [0]],
    [[7, 13], [1, 0]],
    [[3, 64, 5], [2, 0, 1]],
    [[2, 3, 4, 5], [3, 1, 0, 2]],
    [[5, 1, 7], [1, 2, -3]],
    [[2, 63, 2, 65], [0, 2, 1, 3]], // the attention head split: [B, L, H, d] -> [B, H, L, d]
    [[2, 3, 1, 2, 3, 1, 2, 3], [7, 6, 5, 4, 3, 2, 1, 0]], // 8 dims
    // Contiguous innermost runs (the row kernel): vec4 with 4, 8 and 16 lanes per row, vec2, scalar.
    [[2, 5, 3, 8], [0, 2, 1, 3]],
    [[3, 7, 2, 32], [0, 2, 1, 3]],
    [[2, 4, 3, 128], [1, 0, 2, 3]],
    [[3, 5, 2, 6], [2, 0, 1, 3]],
    [[5, 3, 7], [1, 0, 2]],
  ];
  for (const [shape, dims] of PERMS) {
    it(`permute [${shape}] by [${dims}]`, () =>
      checkOp({
        name: `permute [${shape}] [${dims}]`,
        inputs: [{ shape }],
        run: ([x]) => S.permute(x!, dims),
        ref: ([x]) => S.refPermute(x!, dims),
        refGrad: ([x], gy) => [S.refPermuteGrad(x!, dims, gy)],
      }));
  }
  for (const [shape, d0, d1] of [
    [[1, 1], 0, 1],
    [[257, 255], 0, 1],
    [[2, 63, 65], 1, 2],
    [[3, 4, 5], -1, 0],
    [[4, 6], 1, 1],
    [[1823, 781], 0, 1], // the irregular large case
  ] as Array<[number[], number, number]>) {
    it(`transpose [${shape}] ${d0} ${d1}`, () =>
      checkOp({
        name: `transpose [${shape}] ${d0} ${d1}`,
        inputs: [{ shape, range: [-1000, 1000] }],
        run: ([x]) => S.transpose(x!, d0, d1),
        ref: ([x]) => S.refPermute(x!, S.refTransposeDims(shape.length, d0, d1)),
        refGrad: ([x], gy) => [S.refPermuteGrad(x!, S.refTransposeDims(shape.length, d0, d1), gy)],
      }));
  }

  const SLICES: Array<[number[], number, number, number]> = [
    [[1], 0, 0, 1],
    [[257], 0, 1, 256], // contiguous: a buffer copy
    [[7, 13], 0, 2, 5], // contiguous rows
    [[7, 13], 1, 3, 10],
    [[7, 13], -1, -4, -1],
    [[3, 65, 5], 1, 0, 64],
    [[3, 65, 5], 2, 4, 5],
    [[2, 3, 4], 1, 2, 2], // empty
    [[5, 12], 1, 4, 10], // vec2 rows
    [[3, 16], 1, 4, 12], // vec4 rows
    // inner (the dims after the axis) a multiple of 4: the backward's pad_axis{vec4}
    [[3, 7, 8], 1, 2, 5],
    [[2, 300, 4], 1, 1, 299],
    [[6, 5, 12], 0, 1, 4],
  ];
  for (const [shape, axis, start, end] of SLICES) {
    it(`slice [${shape}] axis ${axis} [${start}, ${end})`, () => {
      const n = shape.at(axis)!;
      const s = start < 0 ? start + n : start;
      return checkOp({
        name: `slice [${shape}] ${axis} ${start} ${end}`,
        inputs: [{ shape }],
        run: ([x]) => S.slice(x!, axis, start, end),
        ref: ([x]) => S.refSlice(x!, axis, s, end < 0 ? end + n : end),
        refGrad: ([x], gy) => [S.refSliceGrad(x!, axis, s, gy)],
      });
    });
  }

  const CONCATS: Array<[number[][], number]> = [
    [[[1], [1]], 0],
    [[[3, 5], [1, 5], [7, 5]], 0], // axis 0: buffer copies
    [[[7, 1], [7, 13], [7, 2]], 1],
    [[[2, 3, 63], [2, 3, 1], [2, 3, 2]], -1],
    [[[2, 0, 3], [2, 5, 3]], 1], // an empty input
    [[[4, 64]], 0],
    [[[3, 8], [3, 4], [3, 12]], 1], // vec4 rows
  ];
  for (const [shapes, axis] of CONCATS) {
    it(`concat ${shapes.map((s) => `[${s}]`).join(' ')} axis ${axis}`, () =>
      checkOp({
        name: `concat axis ${axis}`,
        inputs: shapes.map((shape) => ({ shape })),
        run: (xs) => S.concat(xs, axis),
        ref: (xs) => S.refConcat(xs, axis),
        refGrad: (xs, gy) => S.refConcatGrad(xs, axis, gy),
      }));
  }

  // idx values include -1 and A (out of range: read 0, no gradient) and repeats.
  const SELECTS: Array<[number[], number, number[], number[]]> = [
    [[1, 1], 0, [1], [0]],
    [[5, 4], 0, [6], [4, 0, 4, 4, -1, 5]], // vec4 rows
    [[13, 7], 0, [2, 3], [12, 0, 3, 3, 3, 12]],
    [[3, 13, 5], 1, [4], [12, 1, 1, 0]],
    [[2, 5, 8], 1, [3], [4, 4, 2]], // vec4 with outer > 1
    [[3, 7, 6], 1, [2, 2], [6, 0, 7, 6]], // vec2 with outer > 1
    [[2, 3, 5], 2, [2, 2], [4, 0, -1, 9]],
    [[65, 1], 0, [64], Array.from({ length: 64 }, (_, i) => (i * 37) % 66)],
    [[2, 0, 3], 2, [2], [1, 2]], // empty x
    [[3, 4], 0, [0], []], // no indices
  ];
  for (const [shape, axis, ishape, values] of SELECTS) {
    for (const dtype of ['i32', 'u32'] as const) {
      if (dtype === 'u32' && values.some((v) => v < 0)) continue;
      it(`indexSelect [${shape}] axis ${axis} idx ${dtype}[${ishape}]`, () =>
        checkOp({
          name: `indexSelect [${shape}] ${axis} ${dtype}`,
          inputs: [{ shape, range: [-100, 100] }, { shape: ishape, dtype, values }],
          run: ([x, idx]) => S.indexSelect(x!, axis, idx!),
          ref: ([x, idx]) => S.refIndexSelect(x!, axis, idx!),
          refGrad: ([x, idx], gy) => [S.refIndexSelectGrad(x!, axis, idx!, gy), null],
        }));
    }
  }
  it('indexSelectInto (the launch under indexSelect and embedding): a given output, each vector width', async () => {
    for (const width of [1, 2, 4] as const) {
      await checkOp({
        name: `indexSelectInto [3, 11, 8] axis 1 width ${width}`,
        inputs: [{ shape: [3, 11, 8] }, { shape: [5], dtype: 'i32', values: [10, 0, 3, 3, 7] }],
        run: ([x, idx]) => {
          const out = Tensor.empty([3, 5, 8]); // [outer, M, inner]
          S.indexSelectInto(x!, idx!, out, 3, 11, 8, width);
          return out;
        },
        ref: ([x, idx]) => S.refIndexSelect(x!, 1, idx!),
      });
    }
  });
  it('gatherRows with host indices (host-built inverse index in backward)', async () => {
    const values = [3, 3, 0, 6, 3, -2, 1, 3, 3, 0, 3, 3, 3];
    await checkOp({
      name: 'gatherRows hostIdx',
      inputs: [{ shape: [7, 65] }, { shape: [13], dtype: 'i32', values }],
      run: ([t, idx]) => S.gatherRows(t!, idx!, { hostIdx: values }),
      ref: ([t, idx]) => S.refIndexSelect(t!, 0, idx!),
      refGrad: ([t, idx], gy) => [S.refIndexSelectGrad(t!, 0, idx!, gy), null],
    });
  });

  const GATHERS: Array<[number[], number, number[], number[]]> = [
    [[1], 0, [1], [0]],
    [[4, 3], 0, [2, 3], [3, 0, 3, 3, 4, -1]],
    [[3, 7], 1, [3, 5], [6, 6, 0, 1, 6, 2, 2, 2, 2, 2, 0, 7, 3, 6, 6]],
    [[2, 5, 3], 1, [2, 4, 3], Array.from({ length: 24 }, (_, i) => (i * 7) % 5)],
  ];
  for (const [shape, axis, ishape, values] of GATHERS) {
    it(`gather [${shape}] axis ${axis} idx [${ishape}]`, () =>
      checkOp({
        name: `gather [${shape}] ${axis}`,
        inputs: [{ shape }, { shape: ishape, dtype: 'i32', values }],
        run: ([x, idx]) => S.gather(x!, axis, idx!),
        ref: ([x, idx]) => S.refGather(x!, axis, idx!),
        refGrad: ([x, idx], gy) => [S.refGatherGrad(x!, axis, idx!, gy), null],
      }));
  }

  it('moves integer tensors bit-exactly (permute, slice, concat, indexSelect)', async () => {
    const rnd = ref.mulberry32(5);
    const vals = Int32Array.from({ length: 3 * 5 * 7 }, () => ((rnd() * 2 ** 32) | 0) >>> 0);
    const x = Tensor.from(vals, [3, 5, 7], 'i32');
    const asF = (): F64 => ({ data: Float64Array.from(vals), shape: [3, 5, 7] });
    const same = async (t: Tensor, want: F64): Promise<void> => {
      expect(t.dtype).toBe('i32');
      expect([...t.shape]).toEqual(want.shape);
      expect(Array.from(await t.toArray())).toEqual(Array.from(want.data));
      t.dispose();
    };
    await same(S.permute(x, [2, 0, 1]), S.refPermute(asF(), [2, 0, 1]));
    await same(S.slice(x, 2, 1, 6), S.refSlice(asF(), 2, 1, 6));
    await same(S.concat([x, x], 1), S.refConcat([asF(), asF()], 1));
    const idx = Tensor.from(Int32Array.of(4, 0, 4), [3], 'i32');
    await same(S.indexSelect(x, 1, idx), S.refIndexSelect(asF(), 1, idxF64([4, 0, 4])));
    idx.dispose();
    x.dispose();
    await sync();
  });

  it('names the op and the shapes in errors', () => {
    const x = Tensor.empty([2, 3]);
    const i32 = Tensor.from(Int32Array.of(0, 1), [2], 'i32');
    const f32 = Tensor.empty([2]);
    expect(() => S.transpose(x, 0, 2)).toThrow(/transpose: dim1 2 is out of range for shape \[2, 3\]/);
    expect(() => S.permute(x, [0, 0])).toThrow(/permute: dims \[0, 0\] are not a permutation .*\[2, 3\]/);
    expect(() => S.permute(x, [0])).toThrow(/permute: .*\[2, 3\]/);
    expect(() => S.slice(x, 1, 2, 4)).toThrow(/slice: \[2, 4\) is not a valid range of axis 1 \(length 3\) of shape \[2, 3\]/);
    expect(() => S.slice(x, 2, 0, 1)).toThrow(/slice: axis 2 is out of range for shape \[2, 3\]/);
    expect(() => S.concat([x, Tensor.empty([3, 3])], 1)).toThrow(/concat: shapes f32\[2, 3\], f32\[3, 3\] do not match outside axis 1/);
    expect(() => S.concat([x, Tensor.empty([2, 3], 'i32')], 0)).toThrow(/concat: .*i32\[2, 3\]/);
    expect(() => S.concat([], 0)).toThrow(/concat: no tensors/);
    expect(() => S.indexSelect(x, 0, f32)).toThrow(/indexSelect: index f32\[2\] must be i32 or u32/);
    expect(() => S.indexSelect(x, -3, i32)).toThrow(/indexSelect: axis -3 is out of range for shape \[2, 3\]/);
    expect(() => S.gather(x, 1, i32)).toThrow(/gather: index \[2\] must match x \[2, 3\]/);
    expect(() => S.gatherRows(Tensor.empty([2, 3, 4]), i32)).toThrow(/gatherRows: table \[2, 3, 4\] must be \[V, D\]/);
    expect(() => S.gatherRows(x, i32, { hostIdx: [1] })).toThrow(/gatherRows: hostIdx has 1 values/);
  });
});
