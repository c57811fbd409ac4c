#!/usr/bin/env bash
# The one way to submit a fraudstream Spark job, locally or to a cluster.
#
#   ./spark-submit.sh                                  list the jobs
#   ./spark-submit.sh JOB [job options]                run jobs/JOB.py on local[*]
#   ./spark-submit.sh [spark-submit options] JOB [job options]
#
# Anything before the job's name goes to spark-submit as it is, for example
#   ./spark-submit.sh --master spark://host:7077 --driver-memory 4g --conf k=v JOB ...
# Anything after it goes to the job (`./spark-submit.sh JOB --help` lists its options).
# The script adds Spark's Kafka connector and the per-card operator (--jars, from jvm/jars;
# the operator is compiled first if its sources changed), Hadoop's S3A connector for
# s3a:// paths (the class path, from jvm/jars/s3a), and the fraudstream
# package (--py-files, zipped into build/ by content), and uses the project's .venv.
# With a cluster master (spark://, yarn, k8s://) it also ships the executors' Python
# environment, packed into build/executor-env.tar.gz (--archives; fraudstream/ops/executor_env.py).
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"

# A job's name is its file's in jobs/, but for `import`: a Python keyword cannot name a
# module that tests import, so that job's file is jobs/import_public.py.
job_file() { if [ "$1" = import ]; then echo import_public; else echo "$1"; fi; }

list_jobs() {
  shopt -s nullglob
  echo "usage: ./spark-submit.sh [spark-submit options] JOB [job options]"
  echo
  echo "jobs:"
  for file in "$root"/jobs/*.py; do
    name=$(basename "$file" .py)
    [ "$name" = "__init__" ] && continue
    [ "$name" = import_public ] && name=import
    # The first line of the job's docstring says what it does.
    summary=$(sed -n '1s/^"""//; 1s/"""$//; 1p' "$file")
    printf '  %-12s %s\n' "$name" "$summary"
  done
  echo
  echo "./spark-submit.sh JOB --help shows a job's options."
}

submit_options=()
job=""
while [ $# -gt 0 ]; do
  if [ -f "$root/jobs/$(job_file "$1").py" ] && [ "$1" != "__init__" ]; then
    job=$(job_file "$1")
    shift
    break
  fi
  submit_options+=("$1")
  shift
done
if [ -z "$job" ]; then
  if [ ${#submit_options[@]} -gt 0 ] && [[ "${submit_options[-1]}" != -* ]]; then
    echo "spark-submit.sh: no job named '${submit_options[-1]}' in jobs/." >&2
    echo >&2
  fi
  list_jobs
  [ ${#submit_options[@]} -eq 0 ]
  exit $?
fi

if [ -x "$root/.venv/bin/spark-submit" ]; then
  export PATH="$root/.venv/bin:$PATH"
  export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$root/.venv/bin/python}"
elif ! command -v spark-submit >/dev/null 2>&1; then
  echo "spark-submit.sh: spark-submit was not found; run scripts/setup.sh first." >&2
  exit 2
fi

connector=("$root"/jvm/jars/spark-kafka/*.jar)
if [ ! -e "${connector[0]}" ]; then
  echo "spark-submit.sh: Spark's Kafka connector is missing; running scripts/fetch-jars.sh ..." >&2
  "$root/scripts/fetch-jars.sh"
  connector=("$root"/jvm/jars/spark-kafka/*.jar)
fi
# The per-card operator, compiled against this pyspark's jars (idempotent: a check when
# the sources have not changed).
PYTHON="${PYSPARK_PYTHON:-python3}" "$root/scripts/build-operator.sh" >&2
jars=$(IFS=,; echo "${connector[*]},$root/jvm/jars/card-operator/fraudstream-card-operator.jar")
# Hadoop's S3A connector (s3a:// paths), when fetched, goes on the class path as it is:
# --jars would copy its 690 MB AWS SDK bundle into every run's temporary folder. Executors
# of a cluster master look for it at the same path: true of the local standalone cluster
# (`fraudstream spark start`); elsewhere give them the jars yourself (docs/cluster.md).
s3a_jars=("$root"/jvm/jars/s3a/*.jar)
class_path_options=()
if [ -e "${s3a_jars[0]}" ]; then
  s3a_class_path=$(IFS=:; echo "${s3a_jars[*]}")
  class_path_options=(
    --driver-class-path "$s3a_class_path"
    --conf "spark.executor.extraClassPath=$s3a_class_path"
  )
fi

# The package travels to executors as a zip, named by its content: never stale, and a
# job started while another runs never replaces the zip the other imports from.
mkdir -p "$root/build"
package_zip=$(cd "$root" && "${PYSPARK_PYTHON:-python3}" -c '
import hashlib, os, pathlib, sys, zipfile
files = [p for p in sorted(pathlib.Path("fraudstream").rglob("*"))
         if p.is_file() and "__pycache__" not in p.parts]
digest = hashlib.sha256()
for path in files:
    digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
target = pathlib.Path("build") / f"fraudstream-{digest.hexdigest()[:16]}.zip"
if not target.exists():
    partial = target.with_suffix(f".zip.{os.getpid()}")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path)
    os.replace(partial, target)
print(target.resolve())
')

master=""
previous=""
executor_python_given=false
for option in "${submit_options[@]+"${submit_options[@]}"}"; do
  case "$option" in
    --master=*) master="${option#--master=}" ;;
    spark.pyspark.python=*) executor_python_given=true ;;
  esac
  [ "$previous" = "--master" ] && master="$option"
  previous="$option"
done
if [ -z "$master" ]; then
  submit_options=(--master "local[*]" "${submit_options[@]+"${submit_options[@]}"}")
  # Local runs stay on the loopback address.
  export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
elif [[ "$master" != local* ]]; then
  # The driver runs here, with the project's .venv (a later --conf overrides it).
  submit_options=(
    --conf "spark.pyspark.driver.python=${PYSPARK_PYTHON:-python3}"
    "${submit_options[@]}"
  )
  # Executors may not share this machine's site-packages: ship a packed environment
  # (Spark's Python packaging guide), built only when the dependencies changed, and
  # run executors' Python from it. A given --conf spark.pyspark.python (say, a
  # container image's) is used instead.
  if ! $executor_python_given; then
    archive=$(cd "$root" && "${PYSPARK_PYTHON:-python3}" -m fraudstream.ops.executor_env) || exit 2
    submit_options=(
      --archives "$archive#environment"
      --conf spark.pyspark.python=./environment/bin/python
      "${submit_options[@]}"
    )
  fi
fi

# Local default paths (data/, var/) resolve against this checkout, wherever the job runs from.
export FRAUDSTREAM_HOME="$root"

# Quiet logging (conf/spark/log4j2.properties) unless the user has a Spark conf of their own.
export SPARK_CONF_DIR="${SPARK_CONF_DIR:-$root/conf/spark}"

cd "$root"
# spark-submit's JVM runs the job's Python driver as its child. Started in the
# background, the JVM leaves Ctrl-C (SIGINT) alone, and this script forwards Ctrl-C and
# SIGTERM to the Python driver, so that a streaming job stops between micro-batches
# instead of having its SparkContext shut down under it.
spark-submit \
  --jars "$jars" \
  "${class_path_options[@]+"${class_path_options[@]}"}" \
  --py-files "$package_zip" \
  --conf spark.sql.session.timeZone=UTC \
  "${submit_options[@]+"${submit_options[@]}"}" \
  "$root/jobs/$job.py" "$@" &
submit_pid=$!

forward_stop() {
  local driver
  driver=$(pgrep -P "$submit_pid" -f "jobs/$job.py" || true)
  kill -TERM ${driver:-$submit_pid} 2>/dev/null || true
}
trap forward_stop INT TERM

status=0
while true; do
  wait "$submit_pid" && status=0 || status=$?
  # wait returns early (status > 128) when a trapped signal arrives; go on waiting
  # until spark-submit has really exited.
  kill -0 "$submit_pid" 2>/dev/null || break
done
exit "$status"
