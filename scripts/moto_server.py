"""moto's server (the S3 and DynamoDB stand-in of the tests) with S3 conditional writes made
atomic.

moto 5.2.5 checks `If-None-Match: *` / `If-Match` and then stores the object, with nothing
held in between, so two concurrent conditional PUTs of one key can both succeed under load.
AWS S3 lets exactly one win, and the lake's commit protocol (a Delta log version is a
create-if-absent PUT) relies on it: without this, concurrent-writer tests fail now and then
for moto's sake. This wrapper serialises moto's PUT Object handler and then runs moto's own
server entry point with the same arguments (`-H 127.0.0.1 -p 5000`).
"""

import sys
import threading

from moto.s3.responses import S3Response
from moto.server import main

_PUT_LOCK = threading.Lock()
_put_object = S3Response.put_object


def _atomic_put_object(self, *args, **kwargs):
    with _PUT_LOCK:
        return _put_object(self, *args, **kwargs)


S3Response.put_object = _atomic_put_object

if __name__ == "__main__":
    sys.exit(main())
