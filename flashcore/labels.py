"""Readable names for kernel ids on the book's pages: tables and chart axes show these, never internal ids alone.

Records keep ids (``v8_05_mma_registers``); a page writes ``label(id)`` ("v8·05 mma.sync in registers"). Ids with
no entry are shown as themselves with underscores turned into spaces, so a new kernel never breaks a page.
"""
from __future__ import annotations

LABELS = {
    # peers
    "sdpa_cudnn": "cuDNN (SDPA)",
    "sdpa_flash": "FlashAttention-2 (SDPA)",
    "sdpa_efficient": "mem-efficient (SDPA)",
    "sdpa_default": "SDPA default",
    "triton_attention": "Triton (ours)",
    "fa4_hopper": "FA4 Hopper path",
    "empty_kernel": "empty kernel",
    # chapter 1
    "v12_baseline": "v12 baseline",
    "v12_no_4th_barrier": "v12 without 4th barrier",
    "v12_abl_1_grid": "v12 +grid",
    "v12_abl_2_vec": "v12 +grid +vec",
    "v12_abl_3_softmax": "v12 +grid +vec +softmax",
    "v12_abl_4_prefetch": "v12 +all four",
    "v12_only_vec": "v12 +vec only",
    "v12_only_softmax": "v12 +softmax only",
    "v12_only_softmax_vec": "v12 +softmax +vec",
    # chapter 2
    "v11_pipeline": "v11 as designed",
    "v11_fixed": "v11 fixed (all commit)",
    "v11_fixed_roles": "v11 fixed (roles)",
    "v11_fixed_mbarrier": "v11 fixed (mbarriers)",
    "v11_fixed_watchdog": "v11 fixed, watchdog build",
    "v11_fixed_roles_watchdog": "v11 roles, watchdog build",
    "v11_fixed_mbarrier_watchdog": "v11 mbarriers, watchdog build",
    "v11_ctl_guide": "control: guide pattern",
    "v11_ctl_guide_idle": "control: guide, idle committers",
    "v11_ctl_roles": "control: roles",
    "v11_ctl_raw_inc": "control: raw arrive + inc",
    "v11_ctl_raw_noinc": "control: raw .noinc",
    "v11_ctl_raw_waitall": "control: raw wait_all",
    # chapter 3
    "v8_seed": "v8 seed",
    "v8_01_vec_async": "01 cp.async ring",
    "v8_02_swizzle": "02 padded smem",
    "v8_03_exp2_fewer_barriers": "03 exp2, 3 barriers",
    "v8_04_grid_132sm": "04 grid for 132 SMs",
    "v8_05_mma_registers": "05 mma.sync in registers",
    "v8_06_cluster_splitkv": "06 cluster split-KV",
    "v8_07_dsmem_push": "07 DSMEM push",
    "v8_08_kv_wait_split": "08 K/V waits split",
    "v8_09_two_mtiles": "09 two m-tiles",
    "v8_10_mbarrier_combine": "10 mbarrier combine",
    "flashcore": "flashcore",
    "flashcore_hopper": "flashcore (Hopper)",
    # chapter 5
    "hopper_01_wgmma": "H01 wgmma",
    "hopper_02_tma": "H02 TMA",
    "hopper_03_warpspec": "H03 warp-specialised",
    "hopper_04_overlap": "H04 overlap",
    "flashcore_hopper@c2": "flashcore (Hopper), 2 consumers",
    "flashcore_hopper@exp4": "flashcore (Hopper), ¼ exp2 on FMA",
    "flashcore_hopper@s2": "flashcore (Hopper), 2 stages",
}


def label(kernel_id: str) -> str:
    """The readable name of a kernel id (the id itself, spaced, if it has none)."""
    return LABELS.get(kernel_id, str(kernel_id).replace("_", " "))
