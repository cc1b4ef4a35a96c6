"""The handlers and parsers of ``skinlib``'s commands, one module per group; :mod:`skinlib.cli` builds the
command line from them and runs the chosen command. A handler imports the library inside itself, so that
``skinlib --help`` and a mistyped command answer before the library loads."""
