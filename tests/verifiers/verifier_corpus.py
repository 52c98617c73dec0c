"""A deterministic corpus of (gold, completion, expected) pairs in GSM8K and MATH-500 styles.

Used by the differential test against math-verify; ``tools/benchlib/data/verifier_corpus.jsonl`` is a copy for
``tools/bench.py verify``, kept equal to this corpus by ``test_benchmark_corpus_copy_is_current``. The golds imitate
the two datasets' formats (GSM8K: a worked solution ending in ``#### N``; MATH-500: a bare LaTeX answer),
written here by hand (no dataset text is copied). Each gold comes with completions that state the answer
in equivalent forms (expected True) and in wrong forms (expected False).
"""

from __future__ import annotations

from typing import NamedTuple


class Pair(NamedTuple):
    style: str  # "gsm8k" or "math"
    gold: str
    completion: str
    expected: bool


# GSM8K: (gold number as written after ####, equivalent spellings, wrong spellings)
_GSM8K = [
    ("18", ["18", "18.00", "$18", "18 dollars"], ["17", "81"]),
    ("3", ["3", "3.0", "3 hours"], ["2", "4"]),
    ("70000", ["70,000", "70000", "$70,000"], ["7000", "700000"]),
    ("540", ["540", "540 meters"], ["504", "54"]),
    ("20", ["20", "20.0", "20 cups"], ["25", "-20"]),
    ("64", ["64", "\\boxed{64}", "$64$"], ["46", "63"]),
    ("260", ["260", "260.00"], ["26", "2600"]),
    ("160", ["160", "$160"], ["150", "16"]),
    ("45", ["45", "45 minutes"], ["54", "44"]),
    ("460", ["460", "460.0"], ["640", "406"]),
    ("366", ["366"], ["365", "36.6"]),
    ("694", ["694", "694 cookies"], ["649", "693"]),
    ("13", ["13", "13 apples"], ["31", "14"]),
    ("18000", ["18000", "18,000", "$18,000.00"], ["1800", "180000"]),
    ("60", ["60", "60%", "60 percent"], ["0.6", "6"]),
    ("125", ["125", "125.0"], ["12.5", "152"]),
    ("230", ["230", "$230"], ["320", "23"]),
    ("57500", ["57,500", "57500"], ["5750", "575000"]),
    ("7", ["7", "7 hours"], ["8", "-7"]),
    ("6", ["6", "6.00"], ["9", "16"]),
    ("15", ["15", "15 feet"], ["51", "150"]),
    ("14", ["14", "14.0"], ["41", "13"]),
    ("7", ["7", "\\boxed{7}"], ["70", "0.7"]),
    ("8", ["8", "8 dogs"], ["80", "9"]),
    ("26", ["26", "26 students"], ["62", "25"]),
    ("2", ["2", "2.0"], ["0.5", "12"]),
    ("243", ["243", "243 pages"], ["234", "342"]),
    ("16", ["16", "16.000"], ["61", "15"]),
    ("25", ["25", "25%"], ["0.25", "52"]),
    ("104", ["104", "$104"], ["140", "10.4"]),
    ("109", ["109"], ["190", "108"]),
    ("80", ["80", "80 miles"], ["800", "8"]),
    ("35", ["35", "35.00"], ["53", "36"]),
    ("70", ["70", "70 years"], ["7", "71"]),
    ("23", ["23", "23.0"], ["32", "22"]),
    ("9", ["9", "9 pens"], ["6", "99"]),
    ("1450000", ["1,450,000", "1450000"], ["145000", "14500000"]),
    ("-5", ["-5", "-5.0"], ["5", "-4"]),
    ("2125", ["2,125", "2125"], ["2,126", "212.5"]),
    ("0.5", ["0.5", ".5", "1/2"], ["0.05", "5"]),
]

_TEMPLATES = [
    "Let me work it out step by step. So the total is {a}. The answer is {a}.",
    "First compute the parts, then add them up.\n#### {a}",
    "Combining everything we get \\boxed{{{a}}}.",
    "Answer: {a}",
]

# MATH-500: (gold as in the dataset's answer field, equivalent forms, wrong forms)
_MATH = [
    (
        "\\frac{14}{3}",
        ["\\frac{14}{3}", "\\dfrac{14}{3}", "14/3", "4\\frac{2}{3}"],
        ["\\frac{3}{14}", "4.67"],
    ),
    (
        "\\left( 3, \\frac{\\pi}{2} \\right)",
        ["(3, \\frac{\\pi}{2})", "(3,\\pi/2)"],
        ["(3, \\pi)", "(\\frac{\\pi}{2}, 3)"],
    ),
    ("3\\sqrt{13}", ["3\\sqrt{13}", "\\sqrt{117}", "3 \\sqrt{13}"], ["13\\sqrt{3}", "\\sqrt{39}"]),
    ("\\frac{3}{56}", ["\\frac{3}{56}", "3/56"], ["\\frac{56}{3}", "\\frac{3}{65}"]),
    ("\\sqrt{51}", ["\\sqrt{51}", "51^{1/2}"], ["51", "\\sqrt{15}"]),
    ("6 - 5i", ["6-5i", "6 - 5i", "-5i+6"], ["6+5i", "5-6i"]),
    ("\\pi", ["\\pi", "\\frac{2\\pi}{2}"], ["2\\pi", "3.14"]),
    ("x=5", ["5", "x = 5"], ["x=-5", "6"]),
    ("1,-2", ["1, -2", "-2, 1"], ["1, 2", "-1, 2"]),
    ("11\\sqrt2", ["11\\sqrt{2}", "\\sqrt{242}"], ["11\\sqrt{3}", "\\sqrt{22}"]),
    ("\\frac{243}{625}", ["\\frac{243}{625}", "0.3888"], ["\\frac{625}{243}", "\\frac{243}{624}"]),
    ("3, 5, 7", ["3,5,7", "7, 5, 3"], ["3, 5", "3, 5, 8"]),
    ("70 \\sqrt{2}", ["70\\sqrt{2}", "\\sqrt{9800}"], ["70", "7\\sqrt{20}"]),
    ("1.25", ["1.25", "\\frac{5}{4}", "5/4"], ["1.24", "\\frac{4}{5}"]),
    ("x^5 - x^4 + x^3 - x^2 + x - 1", ["x^5-x^4+x^3-x^2+x-1", "(x-1)(x^4+x^2+1)"], ["x^5+x^4+x^3+x^2+x+1"]),
    ("-\\frac{\\pi}{6}", ["-\\frac{\\pi}{6}", "-\\pi/6"], ["\\frac{\\pi}{6}", "-\\frac{\\pi}{3}"]),
    ("(6,31,-1)", ["(6, 31, -1)", "\\left(6,31,-1\\right)"], ["(6,-1,31)", "(6,31,1)"]),
    (
        "\\frac{3\\sqrt{3}}{4}",
        ["\\frac{3\\sqrt{3}}{4}", "\\frac{3}{4}\\sqrt{3}", "\\frac{9}{4\\sqrt{3}}"],
        ["\\frac{3}{4}"],
    ),
    ("\\cot x", ["\\cot x", "\\frac{\\cos x}{\\sin x}"], ["\\tan x", "\\cos x"]),
    ("(-2,1)", ["(-2, 1)"], ["(1,-2)", "(-2,-1)"]),
    (
        "1 \\pm \\sqrt{19}",
        ["1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}"],
        ["1+\\sqrt{19}", "1 \\pm \\sqrt{17}"],
    ),
    ("\\text{east}", ["\\text{east}", "east", "East"], ["west", "\\text{north}"]),
    ("2k+2", ["2k+2", "2(k+1)"], ["2k+1", "k+2"]),
    ("145^\\circ", ["145^\\circ", "145", "145^{\\circ}"], ["135^\\circ", "35"]),
    ("(a+5)(b+2)", ["(a+5)(b+2)", "(b+2)(a+5)", "ab+2a+5b+10"], ["(a+2)(b+5)"]),
    ("(3,4]", ["(3,4]", "(3, 4]"], ["[3,4]", "(3,4)"]),
    ("\\frac43", ["\\frac{4}{3}", "4/3", "1\\frac{1}{3}"], ["\\frac{3}{4}", "1.33"]),
    ("\\text{even}", ["\\text{even}", "even"], ["odd", "\\text{neither}"]),
    ("1+274i", ["1+274i", "274i+1"], ["1-274i", "274+i"]),
    (
        "\\frac{\\sqrt{3}}{3}",
        ["\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt3}{3}"],
        ["\\sqrt{3}", "\\frac{3}{\\sqrt{3}}"],
    ),
    ("2\\sqrt{113}", ["2\\sqrt{113}", "\\sqrt{452}"], ["2\\sqrt{13}", "\\sqrt{226}"]),
    ("30^\\circ", ["30^\\circ", "30", "30^{\\circ}"], ["60^\\circ", "150"]),
    ("-\\sqrt{3}", ["-\\sqrt{3}", "-\\sqrt3"], ["\\sqrt{3}", "-3"]),
    ("\\frac{270}7\\text{ degrees}", ["\\frac{270}{7}", "\\frac{270}{7}^\\circ"], ["\\frac{270}{17}", "38"]),
    (".0000672", ["0.0000672", "6.72\\times10^{-5}"], ["0.000672", "0.00000672"]),
    ("5x - 7y + 11z + 4 = 0", ["5x-7y+11z+4=0", "-5x+7y-11z-4=0"], ["5x-7y+11z-4=0", "5x+7y+11z+4=0"]),
    ("(2,\\infty)", ["(2,\\infty)", "(2, \\infty)"], ["[2,\\infty)", "(-\\infty,2)"]),
    ("10,\\!080", ["10080", "10,080"], ["1080", "10800"]),
    (
        "\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}",
        ["\\begin{pmatrix}-2\\\\-14\\\\-7\\end{pmatrix}"],
        ["\\begin{pmatrix}-2\\\\14\\\\-7\\end{pmatrix}"],
    ),
    ("11,\\! 111,\\! 111,\\! 100", ["11111111100", "11,111,111,100"], ["1111111100", "11111111101"]),
    ("\\text{(C)}", ["\\text{(C)}", "(C)", "C"], ["(B)", "\\text{(D)}"]),
    ("288 \\pi", ["288\\pi", "288 \\pi"], ["288", "144\\pi"]),
    ("\\$32,\\!348", ["32348", "\\$32,348", "32,348"], ["32438", "3234.8"]),
    ("-13x+3", ["-13x+3", "3-13x"], ["13x+3", "-13x-3"]),
    ("864 \\mbox{ inches}^2", ["864", "864 \\text{ square inches}"], ["846", "86.4"]),
    ("1\\frac{4}{5}", ["\\frac{9}{5}", "1.8", "9/5"], ["\\frac{4}{5}", "1.45"]),
    ("18+2\\pi", ["18+2\\pi", "2\\pi+18", "2(9+\\pi)"], ["18+\\pi", "20\\pi"]),
    (
        "3 \\pm 2 \\sqrt{2}",
        ["3 \\pm 2\\sqrt{2}", "3+2\\sqrt{2}, 3-2\\sqrt{2}"],
        ["3+2\\sqrt2", "2 \\pm 3\\sqrt{2}"],
    ),
    (
        "\\left(\\frac{3}{5},\\frac{8}{3}\\right]",
        ["(\\frac{3}{5}, \\frac{8}{3}]", "(0.6, \\frac{8}{3}]"],
        ["[\\frac{3}{5},\\frac{8}{3}]"],
    ),
    ("5.4 \\text{ cents}", ["5.4", "5.40"], ["54", "5.3"]),
    ("(-\\infty, 0]", ["(-\\infty,0]"], ["(-\\infty,0)", "[0,\\infty)"]),
    ("1+2\\sqrt{3}", ["1+2\\sqrt{3}", "2\\sqrt{3}+1", "1+\\sqrt{12}"], ["1+3\\sqrt{2}", "2+2\\sqrt{3}"]),
    (
        "\\frac{11+9a}{20}",
        ["\\frac{11+9a}{20}", "\\frac{9a+11}{20}", "\\frac{11}{20}+\\frac{9a}{20}"],
        ["\\frac{11+9a}{2}"],
    ),
    ("6r^2-4r-24", ["6r^2-4r-24", "2(3r^2-2r-12)"], ["6r^2+4r-24"]),
    ("(0,9) \\cup (9,36)", ["(0,9)\\cup(9,36)", "(9,36)\\cup(0,9)"], ["(0,36)", "(0,9)\\cup(9,35)"]),
    ("\\frac{20000}{\\pi}", ["\\frac{20000}{\\pi}", "20000/\\pi"], ["20000\\pi", "\\frac{2000}{\\pi}"]),
    ("x \\in [-2,7]", ["[-2,7]", "[-2, 7]"], ["(-2,7)", "[-7,2]"]),
    ("\\{1\\pm\\sqrt{5},-2\\}", ["1+\\sqrt5, 1-\\sqrt5, -2", "-2, 1\\pm\\sqrt{5}"], ["1+\\sqrt5, -2"]),
    ("y = 2x + 3", ["y=2x+3", "2x+3"], ["y=3x+2", "y=2x-3"]),
    ("\\frac{2}{1005}", ["\\frac{2}{1005}", "2/1005"], ["\\frac{1}{1005}", "\\frac{2}{1006}"]),
    ("8n^2 + 4n + 1", ["8n^2+4n+1", "1+4n+8n^2"], ["8n^2+4n-1"]),
    ("\\$18.90", ["18.90", "18.9", "\\$18.90"], ["18.09", "1890"]),
    (
        "(-\\infty, 2) \\cup (3, \\infty)",
        ["(-\\infty,2)\\cup(3,\\infty)"],
        ["(2,3)", "(-\\infty,3)\\cup(2,\\infty)"],
    ),
    ("137 \\frac{1}{2}", ["137\\frac{1}{2}", "137.5", "\\frac{275}{2}"], ["\\frac{137}{2}", "138"]),
    ("\\frac{1}{2}", ["\\frac12", "0.5", "1/2"], ["2", "\\frac{1}{3}"]),
    ("10", ["10", "10.0", "\\boxed{10}"], ["100", "11"]),
    ("-2 + 7i", ["-2+7i", "7i-2"], ["2-7i", "-2-7i"]),
    ("\\frac{\\sqrt{21}}{5}", ["\\frac{\\sqrt{21}}{5}", "\\frac{21}{5\\sqrt{21}}"], ["\\frac{21}{5}"]),
    ("4\\sqrt{2}", ["4\\sqrt{2}", "\\sqrt{32}", "2\\sqrt{8}"], ["4", "4\\sqrt{3}"]),
]

_MATH_TEMPLATES = [
    "We simplify and obtain the result. Therefore the final answer is $\\boxed{{{a}}}$.",
    "Putting it together, $\\boxed{{{a}}}$",
]


# Pairs that exercise math-verify's documented failure modes (and a few of our own edge cases).
_EXPLICIT = [
    Pair("math", "10^{-20}", "So the value is $\\boxed{10^{-30}}$.", False),
    Pair("math", "10^{-20}", "So the value is $\\boxed{10^{-20}}$.", True),
    Pair("math", "\\frac{43}{26}", "The answer is 43/26.", True),
    Pair("math", "\\frac{43}{26}", "The answer is 43/27.", False),
    Pair("math", "1-\\frac{1}{e}", "The final answer is $1+\\frac1e$", False),
    Pair("math", "1-\\frac{1}{e}", "The final answer is $1-\\frac1e$", True),
    Pair("math", "1", "The answer is 1+1/e", False),
    Pair("math", "4", "The answer is $4\\sqrt(2)$", False),
    Pair("math", "4\\sqrt{2}", "Hence $\\boxed{4\\sqrt(2)}$", True),
    Pair("math", "\\frac{1}{2}", "The answer is 0.5.", True),
    Pair("math", "\\frac{\\pi}{4}", "So the angle is $\\boxed{\\frac{\\pi}{4}}$ radians.", True),
    Pair("math", "2", "The answer is $\\boxed{\\sqrt{4}}$.", True),
]


def _gsm8k_gold(number: str) -> str:
    return f"We add the amounts in each step.\nThe remaining total works out as computed.\n#### {number}"


def build_corpus() -> list[Pair]:
    """All pairs, in a fixed order."""
    pairs: list[Pair] = []
    for k, (gold, right, wrong) in enumerate(_GSM8K):
        for j, form in enumerate(right):
            template = _TEMPLATES[(k + j) % len(_TEMPLATES)]
            pairs.append(Pair("gsm8k", _gsm8k_gold(gold), template.format(a=form), True))
        for j, form in enumerate(wrong):
            template = _TEMPLATES[(k + j + 1) % len(_TEMPLATES)]
            pairs.append(Pair("gsm8k", _gsm8k_gold(gold), template.format(a=form), False))
    for k, (gold, right, wrong) in enumerate(_MATH):
        for j, form in enumerate(right):
            template = _MATH_TEMPLATES[(k + j) % len(_MATH_TEMPLATES)]
            pairs.append(Pair("math", gold, template.format(a=form), True))
        for j, form in enumerate(wrong):
            template = _MATH_TEMPLATES[(k + j + 1) % len(_MATH_TEMPLATES)]
            pairs.append(Pair("math", gold, template.format(a=form), False))
    pairs.extend(_EXPLICIT)
    return pairs
