from cxrlib.cli import main

raise SystemExit(main())
