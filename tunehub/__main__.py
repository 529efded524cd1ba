from tunehub.cli import app

app()
