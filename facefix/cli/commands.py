"""Imports every command module so that each registers itself on ``app``."""
from facefix.cli import doctor, faces  # noqa: F401,E402
from facefix.cli.main import app  # noqa: E402
from facefix.cli.profiles import profiles_app  # noqa: E402

app.add_typer(profiles_app, name="profiles")
from facefix.cli.models import models_app  # noqa: E402

app.add_typer(models_app, name="models")
from facefix.cli import (
    adapt,  # noqa: F401,E402
    enroll,  # noqa: F401,E402
    evaluate,  # noqa: F401,E402
    restore,  # noqa: F401,E402
)
from facefix.cli.adapt import adapted_app  # noqa: E402

app.add_typer(adapted_app, name="adapted")
