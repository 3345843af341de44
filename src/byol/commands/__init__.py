"""The command line and the commands that are not a stage of their own: bench, embed, export, report, views."""
