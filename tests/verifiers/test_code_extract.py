"""extract_code picks the program out of a completion without running it; plaindata round-trips exactly."""

from __future__ import annotations

import math

import pytest

from srlm_pl.verifiers import extract_code
from srlm_pl.verifiers.code import plaindata


def test_last_python_fence_wins() -> None:
    text = "First try:\n```python\ndef f():\n    return 1\n```\nBetter:\n```python\ndef f():\n    return 2\n```\nDone."
    assert extract_code(text) == "def f():\n    return 2\n"


def test_bare_and_py_fences_count_other_languages_do_not() -> None:
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("```py\nx = 2\n```\n```bash\nrm -rf /\n```") == "x = 2\n"
    assert extract_code("```json\n{\"a\": 1}\n```") is None


F = "def f(x):\n    return 1\n"


@pytest.mark.parametrize(("text", "want"), [
    ("Here:\r\n```python\r\ndef f(x):\r\n    return 1\r\n```\r\nDone.", F),  # CRLF line ends
    ("1. Code:\n   ```python\n   def f(x):\n       return 1\n   ```\n", F),  # a fence indented in a list
    ("````python\ndef f(x):\n    return 1\n````\n", F),  # a longer fence
    ("````python\ndef f(x):\n    return 1\n```\n````\n", F + "```\n"),  # a shorter one does not close it
    ("~~~python\ndef f(x):\n    return 1\n~~~\n", F),  # tildes
])
def test_crlf_indented_and_longer_fences(text: str, want: str) -> None:
    assert extract_code(text) == want


def test_unclosed_last_fence_takes_the_rest() -> None:
    assert extract_code("Here:\n```python\ndef g(x):\n    return x") == "def g(x):\n    return x"


def test_whole_text_when_it_parses_else_none() -> None:
    assert extract_code("def h(a):\n    return a * 2\n") == "def h(a):\n    return a * 2\n"
    assert extract_code("The answer is to loop over the list.") is None
    assert extract_code("") is None
    assert extract_code("   \n") is None
    assert extract_code(None) is None  # type: ignore[arg-type]


def test_parsing_runs_nothing(tmp_path) -> None:
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('x')\n"
    assert extract_code(code) == code
    assert extract_code(f"```python\n{code}```") == code
    assert not marker.exists()


def test_nul_bytes_and_surrogates_do_not_raise() -> None:
    assert extract_code("x = 1\x00\n") is None  # ast.parse refuses NUL: not Python
    assert extract_code("```python\nx = '\udcff'\n```") == "x = '\udcff'\n"


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**4100, -(2**5000), 1.5, -0.0, math.inf, "", "é\x00\udcff", b"\x00\xff",
    [1, [2, [3]]], (1, (2,)), (), {"a": 1, 2: [3], (4, 5): None}, {1, 2}, frozenset({(1, 2)}), 3 + 4j,
])
def test_plaindata_round_trip_is_exact(value) -> None:
    back = plaindata.loads(plaindata.dumps(value))
    assert back == value and type(back) is type(value)


def test_plaindata_refuses_objects_and_subclasses() -> None:
    class Liar:
        def __eq__(self, other):
            return True

    class S(str):
        pass

    for bad in (Liar(), S("x"), [Liar()], {"k": S("v")}, (x for x in range(2)), object()):
        with pytest.raises(plaindata.NotPlainData):
            plaindata.dumps(bad)
    assert math.isnan(plaindata.loads(plaindata.dumps(math.nan)))
    with pytest.raises(plaindata.NotPlainData):
        plaindata.loads('{"#": "eval", "v": "1+1"}')
