/*
 * pgshadowctl.c - entry point of the control CLI; everything else is in
 * src/ctl/ (linked from libpgshadow so tests reach the same code).
 */
#include "pgshadow/ctl.h"

int main(int argc, char **argv)
{
    return ps_ctl_main(argc, argv);
}
