"""cxrlib._text: the one problem-list and KEY=VALUE parser every command uses."""

import pytest

from cxrlib._text import parse_key_values, shown_list


def test_shown_list_cuts_and_counts():
    assert shown_list(["a", "b", "c"], 2, sep="; ") == "a; b; ... and 1 more"
    assert shown_list(["a"], 2) == "a"


def test_parse_key_values_keeps_the_first_equals_and_names_the_option():
    assert parse_key_values(["a.b=x=y", "c="]) == {"a.b": "x=y", "c": ""}
    with pytest.raises(ValueError, match=r"--opt 'colour' is not of the form key=value \(e.g. --opt enc=x\)"):
        parse_key_values(["colour"], "--opt", "enc=x", form="key=value")
    with pytest.raises(ValueError, match="is not of the form"):
        parse_key_values(["=x"])
