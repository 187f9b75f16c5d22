from criruntime.cli import main

raise SystemExit(main())
