from flagcore.cli import main

raise SystemExit(main())
