from __future__ import annotations

import sys

from apps.client.klong_client import main

sys.exit(main())
