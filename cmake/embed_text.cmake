# Turns the text file IN into a C file defining
#   const char NAME[] (NUL-terminated) and const size_t NAME_len.
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," arr "${hex}")
file(WRITE ${OUT}.tmp "/* Generated from ${IN} by cmake/embed_text.cmake. Do not edit. */\n#include <stddef.h>\nconst char ${NAME}[] = {${arr}0x00};\nconst size_t ${NAME}_len = ${len};\n")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
