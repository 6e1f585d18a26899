// kernels/common/mma_sync.cuh — warp-level tensor-core MMA (mma.sync m16n8k16) and its operand loads (ldmatrix).
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"): lane = 4·g + t (g = lane / 4, t = lane % 4).
//   A (16×16 fp16, row-major): a[0] rows g, cols 2t..2t+1; a[1] row g+8; a[2] row g, cols 8+2t; a[3] row g+8, 8+2t.
//   B (16×8 fp16, "col"):      b0 rows 2t..2t+1 of col g;  b1 rows 8+2t..8+2t+1 of col g.
//   C/D (16×8 fp32):           d[0..1] row g, cols 2t, 2t+1;  d[2..3] row g+8, same cols.
// The C layout of two neighbouring n8 tiles, packed to fp16, is the A layout of one k16 step: that is how P goes from
// the softmax straight into P·V without touching shared memory (FlashAttention-2's trick).
#pragma once

// Four 8×8 b16 matrices from shared memory: lanes 8i … 8i+7 give the row addresses of matrix i; r[i] is this lane's
// part of matrix i (ldmatrix.x4). `.trans` transposes each 8×8 matrix on the way (V as the B operand of P·V).
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
// D = A(16×16, row) · B(16×8, col) + D, fp16 in, fp32 accumulate
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
