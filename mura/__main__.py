from mura.cli import main

main()
