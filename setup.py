"""Package list: `mme5/*` as is, and the top-level `kernels/` folder mapped to `mme5.kernels`."""

from setuptools import find_packages, setup

kernel_packages = ["mme5.kernels"] + [f"mme5.kernels.{p}" for p in find_packages("kernels")]
setup(
    packages=find_packages(include=["mme5", "mme5.*"]) + kernel_packages,
    package_dir={"mme5.kernels": "kernels"},
    package_data={"mme5.backbones": ["demo_vocabulary.txt"]},
)
