"""The Triton peer on CPU: line counts computed from the source, and the wrapper's validation errors."""
import pytest

from flashcore import triton_peer

torch = pytest.importorskip("torch")


def test_line_counts_positive_and_consistent():
    counts = triton_peer.line_counts()
    assert set(counts) == {"kernel", "configs", "launch", "file"}
    assert all(isinstance(v, int) and v > 0 for v in counts.values())
    assert counts["kernel"] + counts["configs"] + counts["launch"] < counts["file"]
    assert triton_peer.kernel_lines() == counts["kernel"]


def test_line_counts_are_computed_from_the_text(tmp_path):
    """Comments, blank lines and docstrings do not count; a code line in the kernel does."""
    src = triton_peer.SOURCE.read_text()
    base = triton_peer.line_counts(triton_peer.SOURCE)
    marker = "    q_block, head = tl.program_id(0), tl.program_id(1)\n"
    assert marker in src
    padded = tmp_path / "padded.py"
    padded.write_text(src.replace(marker, marker + "\n    # a comment\n\n    '''not a docstring? a string'''\n", 1))
    more = tmp_path / "more.py"
    more.write_text(src.replace(marker, marker + "    extra = 1\n", 1))
    assert triton_peer.line_counts(padded)["kernel"] == base["kernel"] + 1   # a bare string is an expression
    assert triton_peer.line_counts(more)["kernel"] == base["kernel"] + 1
    commented = tmp_path / "commented.py"
    commented.write_text(src.replace(marker, marker + "    # only a comment\n\n", 1))
    assert triton_peer.line_counts(commented) == base


def test_line_count_of_a_small_file(tmp_path):
    f = tmp_path / "k.py"
    f.write_text('"""doc\nstring"""\nimport x\n\nCONFIGS = [1,\n           2]  # two\n\n\n'
                 '@deco\ndef attention_fwd(a):\n    """doc"""\n    # c\n    return a\n\n'
                 'def attention(q):\n    return q\n')
    assert triton_peer.line_counts(f) == dict(kernel=3, configs=2, launch=2, file=8)


def test_missing_function_is_an_error(tmp_path):
    f = tmp_path / "k.py"
    f.write_text("CONFIGS = []\n")
    with pytest.raises(LookupError, match="attention_fwd"):
        triton_peer.line_counts(f)


def test_wrapper_validation_errors():
    q = torch.zeros(1, 2, 16, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"q\.device must be a CUDA device, got cpu"):
        triton_peer.triton_attention(q, q, q)
    with pytest.raises(TypeError, match=r"v\.dtype must be torch\.float16, got torch\.float32"):
        triton_peer.triton_attention(q, q, q.float())
    with pytest.raises(ValueError, match="q must have 4 dims"):
        triton_peer.triton_attention(q[0], q, q)
    with pytest.raises(TypeError, match="the Triton peer takes torch tensors"):
        triton_peer.triton_attention([1.0], q, q)


def test_configs_and_best_config_before_tuning():
    if not triton_peer.available():
        pytest.skip("Triton does not import here")
    cfgs = triton_peer.configs()
    assert cfgs and all(set(c) == {"BLOCK_M", "BLOCK_N", "num_warps", "num_stages"} for c in cfgs)
    assert len({tuple(sorted(c.items())) for c in cfgs}) == len(cfgs)
    assert triton_peer.best_config(512, 512) is None        # nothing autotuned in this process
