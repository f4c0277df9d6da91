#include "cars_testlib.h"
int main(void)
{
    tu_skip("not written yet");
}
