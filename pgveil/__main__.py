from pgveil.cli import app

app(prog_name="pgveil")
