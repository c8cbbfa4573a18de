from setuptools import find_packages, setup

setup(
    name="pvemond",
    version="0.1.0",
    description="Read-only monitoring API tokens for Proxmox VE, set up and handed over safely",
    license="AGPL-3.0-or-later",
    packages=find_packages(include=["pvemond", "pvemond.*"]),
    package_data={"pvemond": ["openapi.json"]},
    python_requires=">=3.9",
    install_requires=["flask", "gunicorn", "sh", "pyyaml"],
    entry_points={
        "console_scripts": [
            "pvemond = pvemond.cli.admin:main",
            "pvemond-bootstrap = pvemond.cli.bootstrap:main",
            "pvemond-claim = pvemond.cli.claim:command",
        ],
    },
)
