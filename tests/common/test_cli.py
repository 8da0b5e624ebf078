"""The shared CLI helper: one-line usage errors and exit statuses instead of SystemExit."""

from common.cli import Parser, fail, parse_args


def _parser() -> Parser:
    parser = Parser(prog="python -m thing", description="A test CLI.")
    parser.add_argument("count", type=int)
    return parser


def test_usage_error_is_one_line_and_status_2(capsys):
    assert parse_args(_parser(), ["many"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("python -m thing: error: argument count: invalid int value: 'many'")
    assert err.rstrip().endswith("(see --help)")


def test_help_returns_0_and_good_arguments_parse(capsys):
    assert parse_args(_parser(), ["--help"]) == 0
    assert "A test CLI." in capsys.readouterr().out
    assert parse_args(_parser(), ["3"]).count == 3


def test_fail_prints_one_line(capsys):
    assert fail("python -m thing", "bad\n  input", status=3) == 3
    assert capsys.readouterr().err == "python -m thing: error: bad input\n"
