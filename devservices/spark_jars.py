"""The jars Spark needs for ``s3://`` (as ``s3a://``): hadoop-aws and the AWS SDK bundle.

They come from Maven Central (``spark-s3a-pom.xml``) through ``mvn``, once, into
``SPARK_S3A_JARS_DIR`` outside the repo, at install time (``make install`` runs
``python -m devservices.spark_jars``), never when a job runs: no ``spark.jars.packages``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli import Parser, run_cli
from core.settings import Settings, get_settings

from ._common import ServiceError, maven_fetch

POM = Path(__file__).parent / "spark-s3a-pom.xml"


def pyspark_hadoop_version() -> str:
    """The Hadoop version pyspark bundles; hadoop-aws must be the same."""
    import pyspark  # only here: the install step, not import time

    jars = Path(pyspark.__file__).parent / "jars"
    found = sorted(jars.glob("hadoop-client-api-*.jar"))
    if not found:
        raise ServiceError(f"no hadoop-client-api jar in {jars}; is pyspark installed?")
    return found[0].stem.removeprefix("hadoop-client-api-")


def ensure_spark_jars(settings: Settings) -> Path:
    """Fetch the s3a jars into the cache unless they are there; the cache directory."""
    if f"<hadoop.version>{pyspark_hadoop_version()}<" not in POM.read_text():
        raise ServiceError(
            f"{POM.name} pins another Hadoop than pyspark's {pyspark_hadoop_version()};"
            " set <hadoop.version> to it"
        )
    return maven_fetch(POM, settings.spark_s3a_jars_dir, "hadoop-aws", "hadoop-aws-*.jar")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m devservices.spark_jars", description=__doc__)

    def handle(_: argparse.Namespace) -> int:
        print(f"spark s3a jars: {ensure_spark_jars(get_settings())}")
        return 0

    return run_cli(parser, handle, argv)


if __name__ == "__main__":
    sys.exit(main())
