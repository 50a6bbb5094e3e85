from patchvae.cli import main

main()
