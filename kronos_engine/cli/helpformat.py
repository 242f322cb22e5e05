"""`--help` with the defaults: the formatter of every script's parser (issue 22: a user sees
what a long run would use before starting it)."""

from __future__ import annotations

import argparse
import copy


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """`--help` shows every flag's default: `(default: X)` is added unless the help text says
    it already or there is none to show (None, an off switch, an empty list); a flag without
    help text shows `default: X`. The scripts' parsers all use it."""

    @staticmethod
    def _shown(action: argparse.Action) -> bool:
        default = action.default
        hidden = default is None or default is False or default is argparse.SUPPRESS
        return bool(action.option_strings) and not hidden and default != []

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and self._shown(action):
            action = copy.copy(action)
            action.help = "default: %(default)s"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or not self._shown(action):
            return text
        return f"{text} (default: %(default)s)"
