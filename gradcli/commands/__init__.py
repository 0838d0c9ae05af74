"""One module per command, each defining ``command``; gradcli.cli lists them lazily."""
