# make install PREFIX=...: the shared and static library, the public headers,
# outbox.pc, a CMake package (find_package(outbox) -> outbox::outbox and
# outbox::outbox_static), the executables, man pages and the example unit.
# The .pc file and the CMake package locate the prefix from where they were
# installed, so `cmake --install build --prefix DIR` works for any DIR.
set(OUTBOX_PC_REQUIRES "libpq")
set(OUTBOX_PC_REQUIRES_PRIVATE
    "hiredis jansson rdkafka librabbitmq libnats libcurl libsodium")
configure_file(${CMAKE_SOURCE_DIR}/cmake/outbox.pc.in ${CMAKE_BINARY_DIR}/outbox.pc @ONLY)
configure_file(${CMAKE_SOURCE_DIR}/cmake/outboxConfig.cmake.in
               ${CMAKE_BINARY_DIR}/outboxConfig.cmake @ONLY)
include(CMakePackageConfigHelpers)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/outboxConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)

install(TARGETS outbox outbox_shared ARCHIVE DESTINATION lib LIBRARY DESTINATION lib)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/include/outbox DESTINATION include
        FILES_MATCHING PATTERN "*.h")
install(FILES ${CMAKE_BINARY_DIR}/outbox.pc DESTINATION lib/pkgconfig)
install(FILES ${CMAKE_BINARY_DIR}/outboxConfig.cmake ${CMAKE_BINARY_DIR}/outboxConfigVersion.cmake
        DESTINATION lib/cmake/outbox)
install(TARGETS outbox-relay outboxctl RUNTIME DESTINATION bin)
install(FILES ${CMAKE_SOURCE_DIR}/docs/man/outbox-relay.1 ${CMAKE_SOURCE_DIR}/docs/man/outboxctl.1
        DESTINATION share/man/man1)
install(FILES ${CMAKE_SOURCE_DIR}/contrib/systemd/outbox-relay.service
        ${CMAKE_SOURCE_DIR}/contrib/prometheus/outbox-rules.yml
        DESTINATION share/doc/outbox/examples OPTIONAL)
