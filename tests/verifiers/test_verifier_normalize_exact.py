"""Normalisation rules and the exact Fraction fast path."""

from __future__ import annotations

from fractions import Fraction

import pytest

from srlm_pl.verifiers import verify
from srlm_pl.verifiers.exact import INF, exact_equal, parse_exact
from srlm_pl.verifiers.normalize import normalize, text_key


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("18", "18"),
        ("$18.00$", "18.00"),
        ("\\$18", "18"),
        ("7,425,000", "7425000"),
        ("32,\\!349", "32349"),
        ("\\$32,\\!348", "32348"),
        ("11,\\! 111,\\! 111,\\! 100", "11111111100"),
        ("1{,}000", "1000"),
        ("18.", "18"),
        ("**42**", "42"),
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\tfrac{3}{4}", "\\frac{3}{4}"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("90^\\circ", "90"),
        ("90^{\\circ}", "90"),
        ("45 degrees", "45"),
        ("20\\%", "20"),
        ("20%", "20"),
        ("20 percent", "20"),
        ("\\text{Evelyn}", "Evelyn"),
        ("\\text{(C)}", "(C)"),
        ("5.4 \\text{ cents}", "5.4"),
        ("864 \\mbox{ inches}^2", "864"),
        ("\\frac{270}7\\text{ degrees}", "\\frac{270}7"),
        ("18 apples", "18"),
        ("2 x", "2x"),
        ("2\\frac{1}{2}", "\\frac{5}{2}"),
        ("137 \\frac{1}{2}", "\\frac{275}{2}"),
        ("2 1/2", "\\frac{5}{2}"),
        ("x = 5", "5"),
        ("y = 2x + 3", "2x+3"),
        ("x \\in [-2,7]", "[-2,7]"),
        ("x=1, y=2", "1,2"),
        ("5x - 7y + 11z + 4 = 0", "5x-7y+11z+4=0"),
        ("\\pi r^2", "\\pi r^2"),
        ("52_{8}", "52_8"),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
        ("3 \\text{ or } 5", "3,5"),
        ("\u221a2 \u00d7 \u03c0", "\\sqrt2\\times\\pi"),
        ("\\boxed{7}", "7"),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_text_key() -> None:
    assert text_key("(C)") == "c"
    assert text_key("East") == text_key("east") == "east"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("18", Fraction(18)),
        ("18.00", Fraction(18)),
        ("-.5", Fraction(-1, 2)),
        ("\\frac{14}{3}", Fraction(14, 3)),
        ("\\frac43", Fraction(4, 3)),
        ("\\frac9{19}", Fraction(9, 19)),
        ("-\\frac{3}{4}", Fraction(-3, 4)),
        ("\\frac{-3}{4}", Fraction(-3, 4)),
        ("43/26", Fraction(43, 26)),
        ("1.5\\times10^{3}", Fraction(1500)),
        ("10^{-20}", Fraction(1, 10**20)),
        ("2^{10}", Fraction(1024)),
        ("\\infty", INF),
        ("-\\infty", -INF),
    ],
)
def test_exact_scalars(text: str, value: object) -> None:
    assert parse_exact(text) == value


def test_exact_collections() -> None:
    assert parse_exact("(1,2,3)") == ("tuple", (Fraction(1), Fraction(2), Fraction(3)))
    assert parse_exact("[2,\\infty)") == ("interval", "[", Fraction(2), INF, ")")
    assert parse_exact("1,-2") == ("set", (Fraction(-2), Fraction(1)))
    assert parse_exact("\\{3,1,3\\}") == ("set", (Fraction(1), Fraction(3)))
    assert parse_exact("(5)") == Fraction(5)


@pytest.mark.parametrize(
    "text", ["", "x", "\\sqrt{2}", "\\frac{1}{0}", "2^{100000}", "(1,x)", "1,2,x", "[1]"]
)
def test_exact_declines(text: str) -> None:
    assert parse_exact(text) is None


def test_exact_equality_rules() -> None:
    assert exact_equal(parse_exact("18.00"), parse_exact("18"))
    assert not exact_equal(parse_exact("10^{-20}"), parse_exact("10^{-30}"))
    assert exact_equal(parse_exact("1,-2"), parse_exact("\\{-2,1\\}"))
    assert not exact_equal(parse_exact("(1,-2)"), parse_exact("(-2,1)"))
    assert exact_equal(parse_exact("(1,2)"), ("interval", "(", Fraction(1), Fraction(2), ")"))
    assert not exact_equal(parse_exact("(1,2]"), parse_exact("(1,2)"))
    assert not exact_equal(parse_exact("0.333333"), parse_exact("\\frac{1}{3}"))


def test_huge_decimals_compare_by_canonical_digits() -> None:
    big = "1" * 1_000_000
    assert parse_exact(big) == ("bignum", big)
    assert exact_equal(parse_exact(big), parse_exact("000" + big + ".000"))
    assert not exact_equal(parse_exact(big), parse_exact(big[:-1] + "2"))
    assert parse_exact("0" * 5000 + "7") == Fraction(7)


def test_assignment_to_a_thousands_separated_number_is_stripped() -> None:
    """Seen in SmolLM2's GSM8K outputs: 'The answer is N = 25,000.' must match gold 25000."""
    assert normalize("N = 25,000") == "25000"
    assert normalize("x = 1,234.5") == "1234.5"
    assert verify("#### 25000", "The answer is N = 25,000.").status == "correct"
    assert verify("25000", "x = 25,001").status == "incorrect"
