<%@ page contentType="text/plain" trimDirectiveWhitespaces="true" %>DIFF-OTHER tomcat path=<%= request.getServletPath() %><%= request.getPathInfo() == null ? "" : request.getPathInfo() %>
