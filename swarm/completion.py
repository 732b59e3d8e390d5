"""`swarm completion bash`: a completion script generated from the argument parser itself."""

from __future__ import annotations

import argparse


def bash(parser: argparse.ArgumentParser) -> str:
    """A bash (and zsh, through `bashcompinit`) completion function for every command and option."""
    commands = _subcommands(parser)
    cases = "\n".join(
        f'        {name}) words="{" ".join(_words(sub))}" ;;' for name, sub in sorted(commands.items())
    )
    return f"""# codex-swarm completion: source <(swarm completion bash)
_swarm() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" words
    if [ "$COMP_CWORD" -eq 1 ]; then
        words="{" ".join(sorted(commands))} --config --help"
    else
        case "${{COMP_WORDS[1]}}" in
{cases}
        *) words="" ;;
        esac
    fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F _swarm swarm
"""


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subparsers here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _words(parser: argparse.ArgumentParser) -> list[str]:
    """A command's options, and the names of its own subcommands or fixed choices."""
    words = [option for action in parser._actions for option in action.option_strings]
    for action in parser._actions:
        if action.choices and not action.option_strings:
            words.extend(str(choice) for choice in action.choices)
    return words
